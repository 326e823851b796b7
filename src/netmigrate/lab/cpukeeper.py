"""Keep every process of a lab host in that host's cgroup (run by the lab when budgets are on).

Processes the lab starts itself join their cgroup before they exec (the supervisor and
``netmigrate lab exec`` do that). Others are started by whatever a user or Ansible runs inside a
host's namespace: ``start-stop-daemon`` for an agent, ``redis-server --daemonize``, a hand
restart with ``ip netns exec``. The kernel cannot put processes in a cgroup by network
namespace, so this keeper looks every :data:`INTERVAL` seconds and moves:

* a process in a host's namespace that is in no cgroup of this lab (a hand-started agent, or
  one the supervisor started before budgets were on) into that host's cgroup;
* a process in a host's namespace that is in the controller's cgroup and is detached (it leads
  a session of its own, or that session's leader is gone), i.e. a daemon the controller
  started there (``start-stop-daemon --background``, ``redis-server --daemonize``), unless
  it is Ansible's job wrapper or a module: a command the controller runs in a host (a module,
  ``netmigrate migrate``) is the controller's work, a service it starts is the host's.

A process that was put in another host's cgroup on purpose stays there.

    python -m netmigrate.lab.cpukeeper --run-dir /run/netmigrate-lab/nm
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netmigrate.lab import cgroups as cg
from netmigrate.lab.errors import LabError

INTERVAL = 0.1
KEEPER_SERVICE = "cpu-keeper"
#: Command-line marks of Ansible's background job wrapper (async tasks daemonize through it).
_ANSIBLE_MARKS = (b"AnsiballZ_", b"async_wrapper", b"/.ansible/tmp/")
_NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True, slots=True)
class Move:
    pid: int
    host: str


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _detached(pid: int) -> bool:
    """True for a daemon: it leads its own session, or the leader of its session is gone (the
    classic double fork: the intermediate child that called setsid exits)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # After the command name: state, ppid, pgrp, session.
    sid = int(raw[raw.rindex(")") + 2 :].split()[3])
    return sid == pid or (sid > 0 and not Path(f"/proc/{sid}").exists())


def _is_ansible_job(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(mark in cmdline for mark in _ANSIBLE_MARKS)


def _host_inodes(state: cg.LabCpu) -> dict[int, str]:
    out: dict[int, str] = {}
    for netns, host in state.netns.items():
        with contextlib.suppress(OSError):
            out[os.stat(_NETNS_DIR / netns).st_ino] = host
    return out


def plan(state: cg.LabCpu, kernel: cg.Backend | None = None) -> list[Move]:
    """The moves one sweep makes (pure apart from reading /proc and the cgroup files)."""
    kernel = kernel or state.kernel()
    inodes = _host_inodes(state)
    if not inodes:
        return []
    lab_groups = {state.group(h): h for h in state.shares}
    controller = state.group(cg.CONTROLLER) if cg.CONTROLLER in state.shares else None
    moves: list[Move] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        host = inodes.get(_netns_inode(entry.name) or -1)
        if host is None or host not in state.shares:
            continue
        pid = int(entry.name)
        where = (kernel.group_of(pid) or "").strip("/")
        if where == state.group(host):
            continue
        if where in lab_groups and where != controller:
            continue  # placed in another host on purpose (`lab exec`)
        if where == controller and (not _detached(pid) or _is_ansible_job(pid)):
            continue
        moves.append(Move(pid, host))
    return moves


def sweep(state: cg.LabCpu) -> list[Move]:
    moves = plan(state)
    done = []
    for move in moves:
        try:
            cg.join(state, move.host, move.pid)
        except LabError:
            continue  # it exited meanwhile
        done.append(move)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netmigrate.lab.cpukeeper")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--interval", type=float, default=INTERVAL)
    args = p.parse_args(argv)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop:
        state = cg.load(args.run_dir)
        if state is None:
            # The lab dropped its budgets (`lab up --cpu off`) or is going down.
            return 0
        for move in sweep(state):
            print(f"moved pid {move.pid} into {state.group(move.host)}", flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
