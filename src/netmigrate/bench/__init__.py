"""Benchmarks: YCSB workloads, timelines, histograms, plots and peer systems.

Modules: ``ycsb`` (workload generators), ``checker`` (self-describing values, lost-write
checker), ``kv`` (the client interface), ``system`` (the system interface and registry),
``runner`` (load / run / verify), ``metrics`` (HdrHistograms per phase, 100 ms timeline),
``report`` (JSON schema), ``table``, ``plots``, ``overhead`` (harness vs redis-benchmark),
``progress``, ``redis_server`` (local redis-server processes), ``peers`` (Redis Cluster
resharding and stop-and-copy) and ``cli`` (``netmigrate bench``). See docs/benchmarks.md.
"""
