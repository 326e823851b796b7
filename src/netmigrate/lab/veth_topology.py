"""A switch namespace with veth ports, each to its own host namespace: a rig for the lab
switch alone (its benchmark and tests), without the lab's Redis hosts and addresses.

The full lab (:mod:`netmigrate.lab.topology`) plans hosts, addresses and neighbours; this rig
only wires ports, with the same link settings (no IPv6, TX checksum offload off, MTU 9000), and
removes every namespace on exit, also when the block fails.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from netmigrate.netns import call_in_netns
from netmigrate.switch.ports import ETH_P_ALL, PACKET_IGNORE_OUTGOING, SOL_PACKET


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _in_ns(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, check=True)


@dataclass
class VethTopology:
    """``switch_ns`` holds the switch ports ``sw<N>``; host namespace ``hosts[N]`` holds the
    peer ``eth0`` of port N."""

    prefix: str
    switch_ns: str
    hosts: dict[int, str] = field(default_factory=dict)

    def port_args(self) -> list[str]:
        out = ["--netns", self.switch_ns]
        for n in sorted(self.hosts):
            out += ["--port", f"{n}=sw{n}"]
        return out


@contextlib.contextmanager
def veth_topology(ports: Sequence[int], prefix: str = "nmt3-") -> Iterator[VethTopology]:
    """A switch namespace with one veth port per number, each to its own host namespace.

    IPv6 is off (no router solicitations on the wire), TX checksum offload is off (DESIGN
    section 8), MTU 9000. Everything is deleted on exit.
    """
    tag = prefix + secrets.token_hex(3)
    topo = VethTopology(tag, f"{tag}-sw")
    created: list[str] = []
    try:
        for ns in [topo.switch_ns] + [f"{tag}-h{n}" for n in ports]:
            _ip("netns", "add", ns)
            created.append(ns)
            _in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            _in_ns(ns, "ip", "link", "set", "lo", "up")
        for n in ports:
            host = f"{tag}-h{n}"
            topo.hosts[n] = host
            _ip(
                "link", "add", f"sw{n}", "netns", topo.switch_ns, "mtu", "9000",
                "type", "veth", "peer", "name", "eth0", "netns", host, "mtu", "9000",
            )  # fmt: skip
            for ns, dev in ((topo.switch_ns, f"sw{n}"), (host, "eth0")):
                _in_ns(ns, "ethtool", "-K", dev, "tx", "off")
                _in_ns(ns, "ip", "link", "set", dev, "up")
        yield topo
    finally:
        for ns in reversed(created):
            _ip("netns", "del", ns, check=False)


def host_socket(netns: str, iface: str = "eth0", timeout: float = 2.0) -> socket.socket:
    """A raw socket on a host's interface: send frames into the switch, receive its output."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.bind((iface, ETH_P_ALL))
        s.settimeout(timeout)
        return s

    return call_in_netns(netns, make)
