"""``up`` and ``down`` of a testbed: template, data and management networks, hosts, inventory.

Everything ``up`` makes is recorded in ``<state dir>/testbed.json`` before it is made, and every
name derives from the prefix, so ``down`` removes all of it even after a failed ``up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netmigrate.lab import lab
from netmigrate.lab.topology import Topology, build_topology
from netmigrate.testbed import hosts as hx
from netmigrate.testbed import network as net
from netmigrate.testbed.errors import TestbedError
from netmigrate.testbed.inventory import InventoryHost, write_inventory
from netmigrate.testbed.template import ADMIN_USER, DEFAULT_CACHE_DIR, TemplateSpec, ensure_template

DEFAULT_PREFIX = "nmtb"
DEFAULT_STATE_ROOT = Path("/var/lib/netmigrate-testbed")
#: The inventory's hosts on the data network, in switch port order (the lab's names).
DATA_HOSTS: tuple[str, ...] = ("client", "redis1", "redis2", "redis3")
SWITCH_HOST = "sw"
#: The keyspace's service prefix: hosts route it to the switch (DESIGN section 8).
KEYSPACE_PREFIX = "10.0.1.0/24"
STATE_FILE = "testbed.json"
SSH_TIMEOUT = 90.0


@dataclass(slots=True)
class HostRecord:
    name: str  # the inventory host name and the machine name (<prefix>-<role>)
    netns: str
    mgmt_ip: str
    pid: int = 0


@dataclass(slots=True)
class TestbedState:
    __test__ = False
    prefix: str
    state_dir: str
    template: str = ""
    ip_forward_before: str = ""
    hosts: list[HostRecord] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.rename(path)

    @classmethod
    def load(cls, state_dir: Path) -> TestbedState | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["hosts"] = [HostRecord(**h) for h in data.get("hosts", [])]
        return cls(**data)


def state_dir_of(prefix: str, state_root: Path = DEFAULT_STATE_ROOT) -> Path:
    return state_root / prefix


def topology_of(prefix: str) -> Topology:
    return build_topology(prefix, DATA_HOSTS)


def up(
    prefix: str = DEFAULT_PREFIX,
    *,
    state_root: Path = DEFAULT_STATE_ROOT,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    spec: TemplateSpec | None = None,
    mgmt_subnet: str = net.DEFAULT_MGMT_SUBNET,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Bring the testbed up; returns a summary (hosts, inventory path, timings)."""
    t0 = time.monotonic()
    state_dir = state_dir_of(prefix, state_root)
    if TestbedState.load(state_dir) is not None:
        raise TestbedError(f"a testbed {prefix} is up ({state_dir}); run `testbed down` first")
    spec = spec or TemplateSpec()
    template, built = ensure_template(spec, cache_dir)
    t_template = time.monotonic() - t0
    log(f"template {template} ({'built' if built else 'cached'}, {t_template:.1f} s)")
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    state = TestbedState(prefix=prefix, state_dir=str(state_dir), template=str(template))
    state.save()

    topo = topology_of(prefix)
    lab.up(topo, run_dir=state_dir / "lab")
    mgmt = net.MgmtNet(prefix, mgmt_subnet)
    net.bridge_up(mgmt)
    state.ip_forward_before = net.nat_up(mgmt)
    state.save()

    key = _controller_key(state_dir)
    machines = [(f"{prefix}-{SWITCH_HOST}", topo.switch_netns)]
    machines += [(f"{prefix}-{h.name}", h.netns) for h in topo.hosts]
    known_hosts: list[str] = []
    for index, (machine, netns) in enumerate(machines):
        ip = net.attach(mgmt, index, netns)
        if netns != topo.switch_netns:
            host = topo.hosts[index - 1]
            net.route_via_mgmt(mgmt, netns, topo.gateway, host.iface, [KEYSPACE_PREFIX])
        else:
            net.route_via_mgmt(mgmt, netns, topo.gateway, "", [])
        paths = hx.HostPaths(state_dir / "hosts" / machine)
        hx.mount_overlay(template, paths)
        host_key = hx.set_identity(paths.root, machine, key.with_suffix(".pub").read_text())
        known_hosts.append(f"{ip} ssh-ed25519 {host_key}")
        record = HostRecord(name=machine, netns=netns, mgmt_ip=ip)
        state.hosts.append(record)
        state.save()
        record.pid = hx.boot(paths.root, machine, netns, paths.console)
        state.save()
    known = state_dir / "known_hosts"
    known.write_text("\n".join(known_hosts) + "\n")
    t_boot = time.monotonic()
    for record in state.hosts:
        _wait_ssh(state_dir, record)
    t_ssh = time.monotonic() - t_boot
    log(f"{len(state.hosts)} hosts answer SSH {t_ssh:.1f} s after boot")

    inventory = write_inventory(
        state_dir / "inventory",
        switch=InventoryHost(state.hosts[0].name, state.hosts[0].mgmt_ip),
        data_hosts=[
            InventoryHost(rec.name, rec.mgmt_ip, h)
            for rec, h in zip(state.hosts[1:], topo.hosts, strict=True)
        ],
        topology=topo,
        private_key=key,
        known_hosts=known,
        state_dir=state_dir,
        user=ADMIN_USER,
    )
    return {
        "prefix": prefix,
        "state_dir": str(state_dir),
        "inventory": str(inventory),
        "template": str(template),
        "template_built": built,
        "hosts": [asdict(h) for h in state.hosts],
        "seconds": {
            "template": round(t_template, 1),
            "ssh_after_boot": round(t_ssh, 1),
            "total": round(time.monotonic() - t0, 1),
        },
    }


def _controller_key(state_dir: Path) -> Path:
    key = state_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "netmigrate-testbed",
             "-f", str(key)],
            check=True, capture_output=True,
        )  # fmt: skip
    return key


def ssh_argv(state_dir: Path, record: HostRecord, *command: str) -> list[str]:
    """An ssh command line that reaches ``record`` as the admin user (tests use it too)."""
    return [
        "ssh", "-i", str(state_dir / "id_ed25519"),
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={state_dir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=3",
        f"{ADMIN_USER}@{record.mgmt_ip}", *command,
    ]  # fmt: skip


def _wait_ssh(state_dir: Path, record: HostRecord) -> None:
    deadline = time.monotonic() + SSH_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ssh_argv(state_dir, record, "true"), capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        if not hx.is_our_nspawn(record.pid, record.name):
            raise TestbedError(f"{record.name} did not boot; see its console log: {last}")
        time.sleep(0.2)
    raise TestbedError(f"{record.name}: no SSH at {record.mgmt_ip} in {SSH_TIMEOUT:.0f} s: {last}")


def down(
    prefix: str = DEFAULT_PREFIX,
    *,
    state_root: Path = DEFAULT_STATE_ROOT,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[str]:
    """Remove every host, mount, namespace, bridge, NAT rule and file of the testbed."""
    state_dir = state_dir_of(prefix, state_root)
    state = TestbedState.load(state_dir)
    existed = state_dir.exists()
    done: list[str] = []
    t0 = time.monotonic()
    if state is not None:
        for machine in hx.power_off([(r.pid, r.name) for r in state.hosts]):
            done.append(f"powered {machine} off")
        log(f"hosts off in {time.monotonic() - t0:.1f} s")
    if state_dir.exists() and hx.unmount(state_dir):
        done.append("unmounted the hosts' overlays")
    lab_result = lab.down(topology_of(prefix), run_dir=state_dir / "lab")
    done += lab_result.actions
    log(f"namespaces deleted at {time.monotonic() - t0:.1f} s")
    mgmt = net.MgmtNet(prefix)
    if net.nat_down(mgmt):
        done.append(f"deleted nftables table {mgmt.nft_table}")
    if net.bridge_down(mgmt):
        done.append(f"deleted bridge {mgmt.bridge}")
    if state is not None and state.ip_forward_before and not _other_testbeds(state_root, prefix):
        net.restore_ip_forward(state.ip_forward_before)
        done.append(f"ip_forward back to {state.ip_forward_before}")
    if state_dir.exists():
        # lab.down makes its run directory to lock it: only a pre-existing one is news.
        hx.remove_tree(state_dir)
        if existed:
            done.append(f"removed {state_dir}")
    with contextlib.suppress(OSError):
        state_root.rmdir()
    log(f"down in {time.monotonic() - t0:.1f} s")
    return done


def _other_testbeds(state_root: Path, prefix: str) -> bool:
    if not state_root.exists():
        return False
    return any(
        (p / STATE_FILE).exists() for p in state_root.iterdir() if p.is_dir() and p.name != prefix
    )


def status(
    prefix: str = DEFAULT_PREFIX, *, state_root: Path = DEFAULT_STATE_ROOT
) -> dict[str, Any]:
    state_dir = state_dir_of(prefix, state_root)
    state = TestbedState.load(state_dir)
    if state is None:
        return {"prefix": prefix, "up": False, "hosts": []}
    hosts = [asdict(r) | {"running": hx.is_our_nspawn(r.pid, r.name)} for r in state.hosts]
    return {
        "prefix": prefix,
        "up": all(h["running"] for h in hosts) and bool(hosts),
        "state_dir": str(state_dir),
        "inventory": str(state_dir / "inventory"),
        "hosts": hosts,
    }
