"""The local lab: network namespaces, veths and addresses on one machine (DESIGN section 8).

* :mod:`~netmigrate.lab.topology` — the plan as data (:func:`build_topology`, :class:`Topology`);
* :mod:`~netmigrate.lab.lab` — :func:`up` / :func:`down` / :func:`status`, idempotent;
* :mod:`~netmigrate.lab.supervise` — pid-file supervision of processes inside namespaces;
* :mod:`~netmigrate.lab.switch_process` — the lab switch process, supervised or for one block;
* :mod:`~netmigrate.lab.forwarding` — the switch's table entries for a keyspace;
* :mod:`~netmigrate.lab.veth_topology` — a switch namespace with veth ports, nothing else;
* :mod:`~netmigrate.lab.cgroups` — per-host CPU budgets (:func:`read_usage` for reports) and
  :mod:`~netmigrate.lab.cpukeeper`, which keeps every host's processes in its cgroup;
* :mod:`~netmigrate.lab.stack` — the whole lab with Redis and agents;
* :mod:`~netmigrate.lab.cli` — ``netmigrate lab up|down|status|exec``.
"""

from netmigrate.lab.cgroups import CpuBudgets, lab_budgets, parse_cpu, read_usage
from netmigrate.lab.errors import LabError
from netmigrate.lab.lab import LabResult, default_run_dir, down, load_topology, status, up
from netmigrate.lab.supervise import (
    ProcessSpec,
    ProcessStatus,
    StartResult,
    Supervisor,
    tcp_ready,
    unix_ready,
)
from netmigrate.lab.topology import Host, Topology, build_topology

__all__ = [
    "CpuBudgets",
    "Host",
    "LabError",
    "LabResult",
    "ProcessSpec",
    "ProcessStatus",
    "StartResult",
    "Supervisor",
    "Topology",
    "build_topology",
    "default_run_dir",
    "down",
    "lab_budgets",
    "load_topology",
    "parse_cpu",
    "read_usage",
    "status",
    "tcp_ready",
    "unix_ready",
    "up",
]
