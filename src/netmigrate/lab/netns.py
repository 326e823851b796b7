"""Thin, checked wrappers over iproute2 and ethtool.

Every query uses ``ip -json`` so that nothing depends on iproute2's human output format. A
failing command raises :class:`LabError` carrying the command and its stderr.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netmigrate.lab.errors import LabError

NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str], *, check: bool = True) -> str:
    """Run a command, return its stdout; raise :class:`LabError` when it fails."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found (is it installed?)") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def ip(*args: str, netns: str | None = None) -> str:
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    return run([*argv, *args])


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns).strip()
    return json.loads(out) if out else []


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``netns`` (unchanged for the root namespace)."""
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


# --- namespaces ---------------------------------------------------------------------------


def list_netns() -> set[str]:
    return {entry["name"] for entry in ip_json("netns", "list")}


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add_netns(name: str) -> None:
    ip("netns", "add", name)


def delete_netns(name: str) -> None:
    ip("netns", "delete", name)


def netns_pids(name: str) -> list[int]:
    """Pids of the processes whose network namespace is ``name``."""
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


# --- links, addresses, neighbours, routes -----------------------------------------------


def link(netns: str | None, iface: str) -> dict[str, Any] | None:
    """``ip -j -d link show dev IFACE`` (one object), or None when the link does not exist."""
    argv = ["ip", "-j", "-d"]
    if netns is not None:
        argv += ["-n", netns]
    proc = subprocess.run(
        [*argv, "link", "show", "dev", iface], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "Cannot find device" in proc.stderr:
            return None
        raise LabError(f"reading link {iface} in {netns or 'root namespace'}: {proc.stderr}")
    entries = json.loads(proc.stdout)
    return entries[0] if entries else None


def sysctl_get(netns: str | None, keys: Sequence[str]) -> dict[str, str]:
    out = run(in_netns(netns, ["sysctl", "-n", *keys]))
    values = out.splitlines()
    if len(values) != len(keys):
        raise LabError(f"sysctl returned {len(values)} values for {len(keys)} keys")
    return dict(zip(keys, (v.strip() for v in values), strict=True))


def sysctl_set(netns: str | None, key: str, value: str) -> None:
    run(in_netns(netns, ["sysctl", "-q", "-w", f"{key}={value}"]))


# --- ethtool ------------------------------------------------------------------------------


def tx_checksum_offload(netns: str | None, iface: str) -> bool:
    """True when TX checksum offload ("tx-checksumming") is on for ``iface``."""
    out = run(in_netns(netns, ["ethtool", "-k", iface]))
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "tx-checksumming":
            return value.strip().startswith("on")
    raise LabError(f"ethtool -k {iface}: no tx-checksumming line")


def disable_tx_offload(netns: str | None, iface: str) -> None:
    # A frame a veth sends with offload on carries a partial checksum; a software switch
    # re-sending it through AF_PACKET would deliver it with a bad one (DESIGN section 8).
    run(in_netns(netns, ["ethtool", "-K", iface, "tx", "off"]))
