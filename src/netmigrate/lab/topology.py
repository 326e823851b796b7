"""The lab topology plan: which namespaces, links, addresses and MACs exist, as data.

Plan (defaults: prefix ``nm``, hosts ``client redis1 redis2 redis3``):

* one namespace per host, ``<prefix>-<host>`` (``nm-client``, ``nm-redis1`` ...), and the switch
  namespace ``<prefix>-sw``;
* host number ``i`` (0-based, in the order given) is attached to **switch port** ``i + 1`` by a
  veth pair: ``eth0`` in the host namespace, ``s<port>-<host>`` (cut to 15 characters, still
  unique thanks to the port number) in the switch namespace. Defaults: client = port 1,
  redis1 = 2, redis2 = 3, redis3 = 4;
* addresses in 10.0.0.0/24: host ``i`` gets ``10.0.0.(10 + i)`` — client 10.0.0.10, redisN
  10.0.0.1N. ``10.0.0.1`` is the gateway: it names the switch, which has no IP of its own;
* MACs are derived, never random: host ``i`` has ``02:4e:4d:00:00:<10 + i>`` (the last byte is
  the last byte of its IP), the switch side of port ``p`` has ``02:4e:4d:ff:00:<p>``;
* the switch is a router to the hosts: every host has a permanent neighbour entry for the
  gateway and for every other host, all pointing to the MAC of its own switch port (no ARP),
  and a default route via the gateway. The switch rewrites the destination MAC to the
  receiving host's own MAC (``ipv4_lpm`` / ``server_rewrite`` entries derived from this data);
* MTU 9000 and TX checksum offload off on both ends of every veth, IPv6 off in every lab
  namespace (so the kernel puts no stray router solicitations on the switch ports), ``lo`` up.

A *bare* topology (``bare=True``) creates the same namespaces, links and MACs but configures no
IPv4 address, neighbour or route on the hosts: a test harness that sends and captures raw
frames on the host ends (the conformance suite) wants their kernels silent.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from netmigrate.lab.errors import LabError
from netmigrate.protocol.constants import LAB_MTU

DEFAULT_PREFIX = "nm"
DEFAULT_HOSTS: tuple[str, ...] = ("client", "redis1", "redis2", "redis3")
DEFAULT_SUBNET = "10.0.0.0/24"
#: Offset of the first host address in the subnet (client = .10).
HOST_ADDRESS_OFFSET = 10
#: The address that stands for the switch in the hosts' routing tables.
GATEWAY_OFFSET = 1
HOST_IFACE = "eth0"
IFNAMSIZ = 15
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


#: The default lab's TCP ports in the root namespace: P4Runtime, and agent n's control
#: forwarder at base + n.
DEFAULT_P4RUNTIME_PORT = 9559
DEFAULT_CONTROL_BASE = 17000
#: Other prefixes get a block of :data:`PORT_BLOCK` ports in [PORT_RANGE_START, +PORT_BLOCKS
#: blocks): the P4Runtime port first, then the agents' forwarders.
PORT_RANGE_START = 20000
PORT_BLOCK = 20
PORT_BLOCKS = 1400


@dataclass(frozen=True, slots=True)
class LabPorts:
    """The root-namespace TCP ports of one lab, derived from its prefix so that labs with
    different prefixes can run side by side without choosing ports by hand."""

    p4runtime: int
    #: Agent ``n`` (1-based server id) is forwarded at ``control_base + n``.
    control_base: int

    @property
    def max_agents(self) -> int:
        return PORT_BLOCK - 1


def lab_ports(prefix: str) -> LabPorts:
    """``nm`` keeps the documented 9559 / 17000; any other prefix a block by its CRC-32."""
    if prefix == DEFAULT_PREFIX:
        return LabPorts(DEFAULT_P4RUNTIME_PORT, DEFAULT_CONTROL_BASE)
    block = PORT_RANGE_START + (zlib.crc32(prefix.encode()) % PORT_BLOCKS) * PORT_BLOCK
    return LabPorts(p4runtime=block, control_base=block)


def host_mac(index: int) -> str:
    return f"02:4e:4d:00:00:{HOST_ADDRESS_OFFSET + index:02x}"


def switch_port_mac(port: int) -> str:
    return f"02:4e:4d:ff:00:{port:02x}"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    netns: str
    iface: str
    ip: str
    mac: str
    #: The lab switch port (1-based) this host is attached to.
    switch_port: int
    #: The veth end in the switch namespace that is switch port ``switch_port``.
    switch_iface: str
    switch_mac: str


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    switch_netns: str
    subnet: str
    gateway: str
    mtu: int
    hosts: tuple[Host, ...]
    bare: bool = False

    @property
    def netns_names(self) -> tuple[str, ...]:
        return (self.switch_netns, *(h.netns for h in self.hosts))

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no host {name!r} in the lab topology (hosts: {self.host_names})")

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host_by_port(self, port: int) -> Host:
        for h in self.hosts:
            if h.switch_port == port:
                return h
        raise LabError(f"no host on switch port {port}")

    def switch_ports(self) -> dict[int, str]:
        """Switch port number -> interface name in the switch namespace."""
        return {h.switch_port: h.switch_iface for h in self.hosts}

    def routes(self) -> list[tuple[str, str, int]]:
        """``(prefix, dst_mac, port)`` per host: the ``ipv4_lpm`` entries of this lab."""
        return [(f"{h.ip}/32", h.mac, h.switch_port) for h in self.hosts]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hosts"] = [asdict(h) for h in self.hosts]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        try:
            hosts = tuple(Host(**h) for h in data["hosts"])
            return cls(
                prefix=data["prefix"],
                switch_netns=data["switch_netns"],
                subnet=data["subnet"],
                gateway=data["gateway"],
                mtu=int(data["mtu"]),
                hosts=hosts,
                bare=bool(data.get("bare", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"invalid topology description: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Topology:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"invalid topology JSON: {exc}") from exc
        return cls.from_dict(data)


def build_topology(
    prefix: str = DEFAULT_PREFIX,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    subnet: str = DEFAULT_SUBNET,
    mtu: int = LAB_MTU,
    bare: bool = False,
) -> Topology:
    """The deterministic plan for ``hosts`` (see the module docstring); validates every name."""
    if not _PREFIX_RE.match(prefix):
        raise LabError(f"invalid lab prefix {prefix!r}: lowercase letters, digits and '-'")
    names = list(hosts)
    if not names:
        raise LabError("a lab needs at least one host")
    if len(set(names)) != len(names):
        raise LabError(f"duplicate host names in {names}")
    for name in names:
        if not _NAME_RE.match(name) or name == "sw":
            raise LabError(f"invalid host name {name!r}: lowercase letters and digits, not 'sw'")
        if len(f"{prefix}-{name}") > 64:
            raise LabError(f"namespace name {prefix}-{name} is too long")
    if not 1280 <= mtu <= 65535:
        raise LabError(f"MTU {mtu} out of range 1280..65535")
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise LabError(f"invalid subnet {subnet!r}: {exc}") from exc
    if net.version != 4:
        raise LabError("the lab subnet must be IPv4")
    if HOST_ADDRESS_OFFSET + len(names) >= net.num_addresses - 1:
        raise LabError(f"subnet {subnet} is too small for {len(names)} hosts")
    if len(names) > 250:
        raise LabError("at most 250 hosts")

    plan = []
    for i, name in enumerate(names):
        port = i + 1
        plan.append(
            Host(
                name=name,
                netns=f"{prefix}-{name}",
                iface=HOST_IFACE,
                ip=str(net.network_address + HOST_ADDRESS_OFFSET + i),
                mac=host_mac(i),
                switch_port=port,
                switch_iface=f"s{port}-{name}"[:IFNAMSIZ],
                switch_mac=switch_port_mac(port),
            )
        )
    return Topology(
        prefix=prefix,
        switch_netns=f"{prefix}-sw",
        subnet=str(net),
        gateway=str(net.network_address + GATEWAY_OFFSET),
        mtu=mtu,
        hosts=tuple(plan),
        bare=bare,
    )
