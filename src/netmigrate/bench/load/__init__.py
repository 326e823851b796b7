"""Load generator with a recorded history, and the migration-under-load report.

* :mod:`~netmigrate.bench.load.workload` — key choice (zipfian) and the operation mix;
* :mod:`~netmigrate.bench.load.runner` — preload, closed-loop load, final read, outputs;
* ``netmigrate bench load`` / ``netmigrate bench report`` — the command-line front ends
  (:mod:`~netmigrate.bench.load.cli`, :mod:`~netmigrate.bench.load.report_cli`).

The history checker, the timeline and the report writer (load + migration result ->
report.json) are the benchmark package's own: :mod:`netmigrate.bench.history`,
:mod:`netmigrate.bench.timeline`, :mod:`netmigrate.bench.report`.
"""

#: What ``netmigrate bench load --out DIR`` writes into DIR.
LOAD_FILE = "load.json"
HISTORY_FILE = "history.jsonl"
#: Appears once the preload is done and the load runs.
READY_FILE = "ready"
