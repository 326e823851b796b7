"""The configuration the suite installs, derived from the lab topology plan, and its frames.

Ports and hosts come from :func:`netmigrate.lab.build_topology` (the same plan as the lab):
port 1 = client 10.0.0.10, ports 2..4 = servers 1..3 (redis1..3, 10.0.0.11..13). Server ``s``
listens on UDP ``SERVICE_PORT_BASE + s``. Two keyspaces, so that ``slot_base`` matters:

* ``KA``: the classic setup — the service address is server 1's IP, port ``SERVICE_PORT_BASE``;
  id 1, default owner 1, register base 0;
* ``KB``: a virtual service address 10.0.0.100 (no host has it), port ``SERVICE_PORT_BASE + 5``;
  id 2, default owner 2, register base ``SLOT_COUNT``.

* ``KC``: a misconfigured keyspace whose register base is ``SLOT_MAP_SIZE - 10``, so that its
  slots 10 and up fall off the register: id 3, default owner 3.

Frames carry the NetMigrate header of the shared scapy layer
(:mod:`support.scapy_layer`, in tests/support); the layout is never spelled here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from finsy import P4CloneSessionEntry, P4TableAction, P4TableEntry, P4TableMatch
from scapy.layers.inet import IP, UDP, IPOption_NOP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from support.scapy_layer import NetMigrate

from netmigrate.lab import Host, Topology, build_topology
from netmigrate.protocol.codec import Header, decode_header
from netmigrate.protocol.constants import (
    CPU_PORT,
    HEADER_LEN,
    SERVICE_PORT_BASE,
    SLOT_COUNT,
    SLOT_MAP_SIZE,
)
from netmigrate.protocol.layout import NM_LAYOUT

CLIENT_PORT = 40000
#: A server id no table knows.
UNKNOWN_SERVER = 9
TTL = 64


@dataclass(frozen=True, slots=True)
class Server:
    id: int
    host: Host
    udp_port: int

    @property
    def port(self) -> int:
        return self.host.switch_port

    @property
    def ip(self) -> str:
        return self.host.ip

    @property
    def mac(self) -> str:
        return self.host.mac


@dataclass(frozen=True, slots=True)
class Keyspace:
    id: int
    ip: str
    udp_port: int
    default_owner: int
    slot_base: int


class World:
    def __init__(self, topology: Topology | None = None) -> None:
        self.topology = topology or build_topology()
        hosts = self.topology.hosts
        self.client = hosts[0]
        self.servers = {
            i: Server(i, host, SERVICE_PORT_BASE + i) for i, host in enumerate(hosts[1:4], 1)
        }
        self.ka = Keyspace(1, self.servers[1].ip, SERVICE_PORT_BASE, 1, slot_base=0)
        self.kb = Keyspace(2, "10.0.0.100", SERVICE_PORT_BASE + 5, 2, slot_base=SLOT_COUNT)
        self.kc = Keyspace(3, "10.0.0.101", SERVICE_PORT_BASE + 6, 3, SLOT_MAP_SIZE - 10)
        self.keyspaces = (self.ka, self.kb, self.kc)
        #: A route whose next hop is the CPU port: plain forwarding towards the controller.
        self.cpu_route = ("10.0.0.200", "02:4e:4d:ff:ff:fe")

    def entities(self) -> list[Any]:
        """Every table entry and clone session of the suite (docs/pipeline.md "Controller")."""
        out: list[Any] = []
        for host in self.topology.hosts:
            out.append(
                P4TableEntry(
                    "ipv4_lpm",
                    match=P4TableMatch(dstAddr=(host.ip, 32)),
                    action=P4TableAction("ipv4_forward", dst_mac=host.mac, port=host.switch_port),
                )
            )
        out.append(
            P4TableEntry(
                "ipv4_lpm",
                match=P4TableMatch(dstAddr=(self.cpu_route[0], 32)),
                action=P4TableAction("ipv4_forward", dst_mac=self.cpu_route[1], port=CPU_PORT),
            )
        )
        for ks in self.keyspaces:
            out.append(
                P4TableEntry(
                    "keyspace",
                    match=P4TableMatch(dstAddr=ks.ip, dstPort=ks.udp_port),
                    action=P4TableAction(
                        "set_keyspace",
                        keyspace_id=ks.id,
                        default_owner=ks.default_owner,
                        slot_base=ks.slot_base,
                    ),
                )
            )
        for s in self.servers.values():
            out.append(
                P4TableEntry(
                    "server_port",
                    match=P4TableMatch(dest_server=s.id),
                    action=P4TableAction("set_server_port", port=s.port),
                )
            )
            out.append(
                P4TableEntry(
                    "server_rewrite",
                    match=P4TableMatch(egress_server=s.id),
                    action=P4TableAction(
                        "rewrite_to_server", dst_mac=s.mac, dst_ip=s.ip, udp_port=s.udp_port
                    ),
                )
            )
            out.append(
                P4TableEntry(
                    "sender_check",
                    match=P4TableMatch(source_id=s.id, ingress_port=s.port, srcAddr=s.ip),
                    action=P4TableAction("sender_verified"),
                )
            )
            out.append(P4CloneSessionEntry(s.id, replicas=[s.port]))
        return out


# --- frames ---------------------------------------------------------------------------------


def nm_layer(header: Header) -> Packet:
    """The NetMigrate header of ``header`` as the shared scapy layer."""
    return NetMigrate(**{name: getattr(header, name) for name, _, _ in NM_LAYOUT})


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """An Ethernet/IPv4/UDP frame as parameters, so expected frames are ``replace(sent, ...)``.

    ``udp_chksum=None`` lets scapy compute a valid checksum.
    """

    eth_src: str
    eth_dst: str
    ip_src: str
    ip_dst: str
    sport: int
    dport: int
    header: Header | None = None
    payload: bytes = b""
    ttl: int = TTL
    udp_chksum: int | None = None
    ip_options: bool = False
    #: A forced IPv4 header checksum (None: computed, valid).
    ip_chksum: int | None = None
    #: IPv4 flags (2 = DF, 1 = MF) and fragment offset (8-byte units).
    ip_flags: int = 0
    frag: int = 0

    def build(self) -> Packet:
        ip = IP(
            src=self.ip_src,
            dst=self.ip_dst,
            ttl=self.ttl,
            id=0x4E4D,
            flags=self.ip_flags,
            frag=self.frag,
        )
        if self.ip_chksum is not None:
            ip.chksum = self.ip_chksum
        if self.ip_options:
            ip.options = [IPOption_NOP()] * 4
        udp = UDP(sport=self.sport, dport=self.dport)
        if self.udp_chksum is not None:
            udp.chksum = self.udp_chksum
        pkt = Ether(src=self.eth_src, dst=self.eth_dst) / ip / udp
        if self.header is not None:
            pkt = pkt / nm_layer(self.header)
        if self.payload:
            pkt = pkt / Raw(self.payload)
        # Freeze every computed field (lengths, checksums): copies compare byte for byte.
        return Ether(bytes(pkt))


def nm_of(raw: bytes) -> Header:
    """The NetMigrate header of an Ethernet/IPv4(IHL 5)/UDP frame."""
    return decode_header(raw[42 : 42 + HEADER_LEN])


def with_flags(header: Header, flags: int) -> Header:
    return replace(header, flags=header.flags | flags)
