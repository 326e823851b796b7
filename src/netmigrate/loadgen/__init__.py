"""Load generator with a recorded history, and the migration-under-load report.

* :mod:`~netmigrate.loadgen.workload` — key choice (zipfian) and the operation mix;
* :mod:`~netmigrate.loadgen.timeline` — 100 ms bins with a latency HdrHistogram each;
* :mod:`~netmigrate.loadgen.runner` — preload, closed-loop load, final read, outputs;
* :mod:`~netmigrate.loadgen.report` — load + migration result -> report.json and a PNG;
* ``netmigrate load`` / ``netmigrate report`` — the command-line front ends.
"""
