"""Bring a lab topology up, down, and report what exists.

Every step first reads the current state and changes only what differs, so ``up`` on a lab
that is already up changes nothing and says so (``changed=False``), and ``up`` repairs a lab
that is half there (a deleted veth, a wrong MTU, offload switched back on).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from netmigrate.lab import cgroups, cpukeeper
from netmigrate.lab import netns as nx
from netmigrate.lab.cgroups import CpuBudgets
from netmigrate.lab.cpukeeper import KEEPER_SERVICE
from netmigrate.lab.errors import LabError
from netmigrate.lab.supervise import ProcessSpec, Supervisor, process_running
from netmigrate.lab.topology import Host, Topology

DEFAULT_RUN_ROOT = Path("/run/netmigrate-lab")
TOPOLOGY_FILE = "topology.json"
_LOCK_FILE = ".lab.lock"
_NS_SYSCTLS = {
    # No IPv6 in the lab: otherwise every interface emits router solicitations and MLD reports
    # that the switch ports see as stray traffic.
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def default_run_dir(prefix: str) -> Path:
    return DEFAULT_RUN_ROOT / prefix


@dataclass(slots=True)
class LabResult:
    changed: bool = False
    #: One line per change made, in order (what an operator wants to see on ``-v``).
    actions: list[str] = field(default_factory=list)

    def did(self, action: str) -> None:
        self.changed = True
        self.actions.append(action)


@contextlib.contextmanager
def _lab_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- up -------------------------------------------------------------------------------------


#: ``up(cpu=KEEP_CPU)``: leave the lab's CPU budgets as they are (none for a new lab).
KEEP_CPU = "keep"


def up(
    topology: Topology,
    run_dir: Path | str | None = None,
    *,
    cpu: CpuBudgets | Literal["keep"] | None = KEEP_CPU,
) -> LabResult:
    """Create whatever of ``topology`` is missing or wrong. Idempotent.

    ``cpu``: per-host CPU budgets to enforce (:mod:`netmigrate.lab.cgroups`), None to remove
    them, :data:`KEEP_CPU` to keep what the lab has.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(topology.prefix)
    result = LabResult()
    with _lab_lock(run_dir):
        _check_recorded(topology, run_dir)
        for ns in topology.netns_names:
            _ensure_netns(ns, result)
        for host in topology.hosts:
            _ensure_veth(topology, host, result)
            for ns, iface, mac in (
                (host.netns, host.iface, host.mac),
                (topology.switch_netns, host.switch_iface, host.switch_mac),
            ):
                _ensure_link(ns, iface, mac, topology.mtu, result)
                _ensure_tx_offload_off(ns, iface, result)
            if not topology.bare:
                _ensure_host_ip(topology, host, result)
        topo_file = run_dir / TOPOLOGY_FILE
        text = topology.to_json() + "\n"
        if not topo_file.exists() or topo_file.read_text() != text:
            topo_file.write_text(text)
            result.did(f"wrote {topo_file}")
        if cpu != KEEP_CPU:
            _ensure_cpu(topology, run_dir, cpu, result)
    return result


def _ensure_cpu(
    topology: Topology, run_dir: Path, budgets: CpuBudgets | None, result: LabResult
) -> None:
    supervisor = Supervisor(run_dir)
    if budgets is None:
        if supervisor.stop(KEEPER_SERVICE):
            result.did(f"stopped {KEEPER_SERVICE}")
        supervisor.remove_files(KEEPER_SERVICE)
        for action in cgroups.remove(run_dir):
            result.did(action)
        return
    netns = cgroups.netns_map(topology.switch_netns, ((h.name, h.netns) for h in topology.hosts))
    state, actions = cgroups.apply(topology.prefix, budgets, netns, run_dir)
    for action in actions:
        result.did(action)
    keeper = ProcessSpec(
        name=KEEPER_SERVICE,
        argv=(sys.executable, "-m", "netmigrate.lab.cpukeeper", "--run-dir", str(run_dir)),
    )
    if supervisor.start(keeper).changed:
        result.did(f"started {KEEPER_SERVICE} (keeps each host's processes in its cgroup)")
    # Processes already running in the hosts join now, not a sweep later.
    for move in cpukeeper.sweep(state):
        result.did(f"moved pid {move.pid} into {state.group(move.host)}")


def cpu_budgets(run_dir: Path | str) -> cgroups.LabCpu | None:
    """The CPU budgets the lab in ``run_dir`` enforces (None: none)."""
    return cgroups.load(run_dir)


def _check_recorded(topology: Topology, run_dir: Path) -> None:
    """Refuse to bring up a different topology over a recorded one (down it first)."""
    recorded = load_topology(run_dir)
    if recorded is None:
        return
    if recorded != topology:
        raise LabError(
            f"{run_dir} records a different lab topology (hosts {recorded.host_names}); "
            "bring that lab down first"
        )


def _ensure_netns(ns: str, result: LabResult) -> None:
    if not nx.netns_exists(ns):
        nx.add_netns(ns)
        result.did(f"created namespace {ns}")
    lo = nx.link(ns, "lo")
    if lo is None or "UP" not in lo.get("flags", []):
        nx.ip("link", "set", "dev", "lo", "up", netns=ns)
        result.did(f"{ns}: lo up")
    current = nx.sysctl_get(ns, list(_NS_SYSCTLS))
    for key, value in _NS_SYSCTLS.items():
        if current[key] != value:
            nx.sysctl_set(ns, key, value)
            result.did(f"{ns}: {key}={value}")


def _is_peer_pair(topology: Topology, host: Host) -> bool:
    """True when the host end and the switch end exist and are the two ends of one veth."""
    a = nx.link(host.netns, host.iface)
    b = nx.link(topology.switch_netns, host.switch_iface)
    if a is None or b is None:
        return False
    kind = ("linkinfo", "info_kind")
    if a.get(kind[0], {}).get(kind[1]) != "veth" or b.get(kind[0], {}).get(kind[1]) != "veth":
        return False
    # Each end names its peer by ifindex ("link_index") in the other namespace.
    return a.get("link_index") == b.get("ifindex") and b.get("link_index") == a.get("ifindex")


def _ensure_veth(topology: Topology, host: Host, result: LabResult) -> None:
    if _is_peer_pair(topology, host):
        return
    # A half-present pair (one end deleted, or an unrelated link under our name) is rebuilt.
    for ns, iface in ((host.netns, host.iface), (topology.switch_netns, host.switch_iface)):
        if nx.link(ns, iface) is not None:
            nx.ip("link", "delete", "dev", iface, netns=ns)
            result.did(f"{ns}: deleted stale link {iface}")
    nx.ip(
        "link", "add", host.iface, "netns", host.netns,
        "mtu", str(topology.mtu), "address", host.mac,
        "type", "veth",
        "peer", "name", host.switch_iface, "netns", topology.switch_netns,
        "mtu", str(topology.mtu), "address", host.switch_mac,
    )  # fmt: skip
    result.did(
        f"created veth {host.netns}:{host.iface} <-> "
        f"{topology.switch_netns}:{host.switch_iface} (switch port {host.switch_port})"
    )


def _ensure_link(ns: str, iface: str, mac: str, mtu: int, result: LabResult) -> None:
    info = nx.link(ns, iface)
    if info is None:
        raise LabError(f"{ns}: link {iface} vanished")
    if info.get("mtu") != mtu:
        nx.ip("link", "set", "dev", iface, "mtu", str(mtu), netns=ns)
        result.did(f"{ns}: {iface} mtu {mtu}")
    if str(info.get("address", "")).lower() != mac:
        nx.ip("link", "set", "dev", iface, "address", mac, netns=ns)
        result.did(f"{ns}: {iface} address {mac}")
    if "UP" not in info.get("flags", []):
        nx.ip("link", "set", "dev", iface, "up", netns=ns)
        result.did(f"{ns}: {iface} up")


def _ensure_tx_offload_off(ns: str, iface: str, result: LabResult) -> None:
    if nx.tx_checksum_offload(ns, iface):
        nx.disable_tx_offload(ns, iface)
        if nx.tx_checksum_offload(ns, iface):
            raise LabError(f"{ns}: cannot turn TX checksum offload off on {iface}")
        result.did(f"{ns}: {iface} tx offload off")


@dataclass(frozen=True, slots=True)
class _HostIp:
    """The IPv4 configuration of a host's lab interface, as it is now."""

    addresses: frozenset[str]
    #: Permanent neighbour entries: IP -> MAC.
    neighbours: dict[str, str]
    default_via: frozenset[str]

    @classmethod
    def read(cls, host: Host) -> _HostIp:
        ns, dev = host.netns, host.iface
        addresses = frozenset(
            f"{a['local']}/{a['prefixlen']}"
            for entry in nx.ip_json("-4", "addr", "show", "dev", dev, netns=ns)
            for a in entry.get("addr_info", [])
        )
        neighbours = {
            n["dst"]: str(n.get("lladdr", "")).lower()
            for n in nx.ip_json("-4", "neigh", "show", "dev", dev, netns=ns)
            if "dst" in n and "PERMANENT" in n.get("state", [])
        }
        default_via = frozenset(
            r["gateway"]
            for r in nx.ip_json("-4", "route", "show", "default", netns=ns)
            if r.get("dev") == dev and "gateway" in r
        )
        return cls(addresses, neighbours, default_via)


def _address(topology: Topology, host: Host) -> str:
    return f"{host.ip}/{topology.prefix_len}"


def _peers(topology: Topology, host: Host) -> list[str]:
    """Every address a host reaches through its switch port: the gateway and the other hosts."""
    return [topology.gateway, *(h.ip for h in topology.hosts if h is not host)]


def _ensure_host_ip(topology: Topology, host: Host, result: LabResult) -> None:
    ns, dev = host.netns, host.iface
    now = _HostIp.read(host)
    want = _address(topology, host)
    if want not in now.addresses:
        nx.ip("addr", "add", want, "dev", dev, netns=ns)
        result.did(f"{ns}: address {want} on {dev}")
    # Permanent neighbour entries, all pointing at this host's switch port: nobody ever ARPs,
    # and the switch needs no ARP handling.
    for peer in _peers(topology, host):
        if now.neighbours.get(peer) != host.switch_mac:
            nx.ip(
                "neigh", "replace", peer, "lladdr", host.switch_mac,
                "dev", dev, "nud", "permanent", netns=ns,
            )  # fmt: skip
            result.did(f"{ns}: neighbour {peer} -> {host.switch_mac}")
    if topology.gateway not in now.default_via:
        nx.ip("route", "replace", "default", "via", topology.gateway, "dev", dev, netns=ns)
        result.did(f"{ns}: default via {topology.gateway}")


# --- down -----------------------------------------------------------------------------------


def down(
    topology: Topology | None = None,
    run_dir: Path | str | None = None,
    *,
    prefix: str | None = None,
) -> LabResult:
    """Stop the lab's processes, delete its namespaces (and so its veths) and its files.

    The topology recorded in ``run_dir`` by :func:`up` wins over the one given, so ``down``
    removes what was really created even when called with fewer parameters.
    """
    if run_dir is None:
        name = prefix or (topology.prefix if topology is not None else None)
        if name is None:
            raise LabError("down needs a topology, a prefix or a run directory")
        run_dir = default_run_dir(name)
    run_dir = Path(run_dir)
    result = LabResult()
    with _lab_lock(run_dir):
        recorded = load_topology(run_dir)
        topo = recorded or topology
        supervisor = Supervisor(run_dir)
        for name in supervisor.names():
            if supervisor.stop(name):
                result.did(f"stopped {name}")
            supervisor.remove_files(name)
        if topo is not None:
            for ns in topo.netns_names:
                if not nx.netns_exists(ns):
                    continue
                _kill_netns_processes(ns, result)
                nx.delete_netns(ns)
                result.did(f"deleted namespace {ns}")
        for action in cgroups.remove(run_dir):
            result.did(action)
        for path in sorted(run_dir.glob("*")):
            if path.name == _LOCK_FILE:
                continue
            if path.is_file():
                path.unlink()
                result.did(f"removed {path}")
    (run_dir / _LOCK_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()
    return result


def _kill_netns_processes(ns: str, result: LabResult) -> None:
    """Processes left in a lab namespace (started outside the supervisor) keep it alive."""
    pids = nx.netns_pids(ns)
    if not pids:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if process_running(p)]
            if not pids:
                break
            time.sleep(0.02)
        if not pids:
            break
    result.did(f"{ns}: killed leftover processes")


# --- status ---------------------------------------------------------------------------------


def load_topology(run_dir: Path | str) -> Topology | None:
    path = Path(run_dir) / TOPOLOGY_FILE
    try:
        return Topology.from_json(path.read_text())
    except FileNotFoundError:
        return None


def status(topology: Topology, run_dir: Path | str | None = None) -> dict[str, Any]:
    """What exists of ``topology`` right now, as plain data (JSON-serialisable)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(topology.prefix)
    namespaces = {ns: nx.netns_exists(ns) for ns in topology.netns_names}
    links: dict[str, Any] = {}
    for host in topology.hosts:
        for ns, iface in (
            (host.netns, host.iface),
            (topology.switch_netns, host.switch_iface),
        ):
            key = f"{ns}:{iface}"
            info = nx.link(ns, iface) if namespaces[ns] else None
            try:
                offload = None if info is None else nx.tx_checksum_offload(ns, iface)
            except LabError:
                # The kernel removes the peer of a veth whose namespace was just deleted a
                # moment later: a link can vanish between two queries. Only then is this no
                # error.
                if nx.link(ns, iface) is not None:
                    raise
                info = None
            if info is None:
                links[key] = {"exists": False}
                continue
            links[key] = {
                "exists": True,
                "up": "UP" in info.get("flags", []),
                "mtu": info.get("mtu"),
                "address": info.get("address"),
                "tx_offload": offload,
            }
    hosts: dict[str, Any] = {}
    if not topology.bare:
        for host in topology.hosts:
            hosts[host.name] = (
                _host_ip_state(topology, host) if namespaces[host.netns] else {"configured": False}
            )
    supervisor = Supervisor(run_dir)
    processes = {
        name: {
            "running": st.running,
            "pid": st.pid,
            "netns": st.netns,
            "program": st.program,
            "adopted": st.adopted,
        }
        for name in supervisor.names()
        for st in (supervisor.status(name),)
    }
    complete = (
        all(namespaces.values())
        and all(v["exists"] and v["up"] and not v["tx_offload"] for v in links.values())
        and all(v["mtu"] == topology.mtu for v in links.values())
        and all(v["configured"] for v in hosts.values())
    )
    return {
        "prefix": topology.prefix,
        "run_dir": str(run_dir),
        "up": complete,
        "recorded": (run_dir / TOPOLOGY_FILE).exists(),
        "namespaces": namespaces,
        "links": links,
        "hosts": hosts,
        "processes": processes,
    }


def _host_ip_state(topology: Topology, host: Host) -> dict[str, Any]:
    if nx.link(host.netns, host.iface) is None:
        return {"configured": False}
    now = _HostIp.read(host)
    missing = [p for p in _peers(topology, host) if now.neighbours.get(p) != host.switch_mac]
    default_ok = topology.gateway in now.default_via
    return {
        "configured": _address(topology, host) in now.addresses and not missing and default_ok,
        "addresses": sorted(now.addresses),
        "missing_neighbours": missing,
        "default_route": default_ok,
    }
