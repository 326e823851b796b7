"""Every benchmark and load runner of NetMigrate, and the only place that needs the bench extra.

The product packages (agent, switch, migration, client, p4rt, lab, protocol) never import this
package; it imports them. Entry point: ``netmigrate bench`` (:mod:`~netmigrate.bench.cli`).

* ``history`` — the one history checker (recorded operations, unique values; lost writes,
  stale reads, duplicates), used by the YCSB harness, the load generator and the tests;
* ``timeline`` — the one timeline (HdrHistograms per phase, 100 ms bins);
* ``report`` — the one report writer (schema, machine facts, JSON);
* ``ycsb``, ``kv``, ``system``, ``runner``, ``overhead``, ``progress``, ``table``, ``plots``,
  ``redis_server`` — the YCSB harness (``netmigrate bench run|all|compare|overhead``);
* ``peers`` — the systems compared: NetMigrate's lab, Redis Cluster resharding, stop-and-copy;
* ``load`` — client load with a recorded history and the migration-under-load report
  (``netmigrate bench load|report``; the demo and ``playbooks/bench.yml``);
* ``micro`` — micro-benchmarks of the agent, the lab switch and the slot copy
  (``netmigrate bench agent|switch|copy``).

See docs/benchmarks.md.
"""
