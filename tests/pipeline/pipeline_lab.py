"""An in-memory PipelineState checked against the committed P4Info, and a small lab to use it.

The state is a test double of the runtime's entity store, not the system under test: it keeps
tables, the slot_map register, counters, clone sessions and digests in dicts. It is strict in
the ways that catch pipeline bugs: every name (table, match field, action, parameter, register,
counter, digest field) must exist in the committed P4Info, register and counter indices must be
in range, and each call is recorded so that tests can assert the pipeline's state traffic.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from finsy.proto import p4i
from google.protobuf import text_format
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum
from support.scapy_layer import NetMigrate

from netmigrate.protocol.constants import CPU_PORT, SLOT_COUNT
from netmigrate.resources import p4info_path
from netmigrate.switch.interfaces import ActionCall


def load_p4info() -> p4i.P4Info:
    return text_format.Parse(p4info_path().read_text(), p4i.P4Info())


P4INFO = load_p4info()


@dataclass
class _Table:
    kinds: dict[str, int]  # match field name -> MatchType
    actions: dict[str, dict[str, int]]  # action name -> {param: bitwidth}
    default: ActionCall
    entries: list[tuple[dict[str, tuple[int, int]], ActionCall]] = field(default_factory=list)


class MemoryState:
    """PipelineState in dicts, validated against the P4Info."""

    def __init__(self, p4info: p4i.P4Info = P4INFO, cpu_port: int = CPU_PORT) -> None:
        self.cpu_port = cpu_port
        actions = {a.preamble.id: a for a in p4info.actions}
        self.tables: dict[str, _Table] = {}
        for t in p4info.tables:
            acts = {
                actions[r.id].preamble.name: {p.name: p.bitwidth for p in actions[r.id].params}
                for r in t.action_refs
            }
            default = ActionCall(actions[t.initial_default_action.action_id].preamble.name)
            self.tables[t.preamble.name] = _Table(
                {m.name: m.match_type for m in t.match_fields}, acts, default
            )
        self.field_widths = {
            t.preamble.name: {m.name: m.bitwidth for m in t.match_fields} for t in p4info.tables
        }
        self.register_sizes = {r.preamble.name: r.size for r in p4info.registers}
        self.counter_sizes = {c.preamble.name: c.size for c in p4info.counters}
        self.digest_fields = {
            d.preamble.name: [
                m.name for m in p4info.type_info.structs[d.type_spec.struct.name].members
            ]
            for d in p4info.digests
        }
        self.registers: dict[str, dict[int, int]] = {n: {} for n in self.register_sizes}
        self.counters: dict[str, dict[int, list[int]]] = {n: {} for n in self.counter_sizes}
        self.sessions: dict[int, list[tuple[int, int]]] = {}
        self.digests: list[tuple[str, dict[str, int]]] = []
        self.calls: Counter[str] = Counter()

    # -- control plane -------------------------------------------------------------------------

    def add_entry(
        self, table: str, match: Mapping[str, int | tuple[int, int]], action: str, **params: int
    ) -> None:
        t = self.tables[table]
        assert set(match) == set(t.kinds), f"{table}: match fields {set(match)} != {set(t.kinds)}"
        assert action in t.actions, f"{table}: {action} is not one of its actions"
        assert set(params) == set(t.actions[action]), f"{action}: params {set(params)}"
        widths = self.field_widths[table]
        canon = {}
        for name, value in match.items():
            if t.kinds[name] == p4i.MatchField.LPM:
                assert isinstance(value, tuple)
                canon[name] = value
            else:
                assert isinstance(value, int)
                canon[name] = (value, widths[name])
            assert 0 <= canon[name][0] < 1 << widths[name], f"{name} too wide"
        t.entries.append((canon, ActionCall(action, dict(params), hit=True)))

    def set_default(self, table: str, action: str, **params: int) -> None:
        self.tables[table].default = ActionCall(action, dict(params))

    def set_slot(self, index: int, owner: int, target: int) -> None:
        self.registers["NetMigrateIngress.slot_map"][index] = (owner << 8) | target

    def set_epoch(self, index: int, epoch: int) -> None:
        self.registers["NetMigrateIngress.slot_epoch"][index] = epoch

    def epoch(self, index: int) -> int:
        return self.registers["NetMigrateIngress.slot_epoch"].get(index, 0)

    def slot(self, index: int) -> tuple[int, int]:
        v = self.registers["NetMigrateIngress.slot_map"].get(index, 0)
        return v >> 8, v & 0xFF

    def counter(self, name: str, index: int) -> tuple[int, int]:
        packets, nbytes = self.counters[name].get(index, [0, 0])
        return packets, nbytes

    def decisions(self) -> dict[int, int]:
        cells = self.counters["NetMigrateIngress.decision_counter"]
        return {i: c[0] for i, c in cells.items() if c[0]}

    # -- PipelineState -------------------------------------------------------------------------

    def table_lookup(self, table: str, key: Mapping[str, int]) -> ActionCall:
        self.calls[f"table:{table}"] += 1
        t = self.tables[table]
        assert set(key) == set(t.kinds), f"{table}: key {set(key)} != {set(t.kinds)}"
        widths = self.field_widths[table]
        for name, value in key.items():
            assert isinstance(value, int) and 0 <= value < 1 << widths[name], (name, value)
        best: tuple[int, ActionCall] | None = None
        for match, call in t.entries:
            score = 0
            for name, (value, plen) in match.items():
                width = widths[name]
                mask = ((1 << plen) - 1) << (width - plen)
                if key[name] & mask != value & mask:
                    break
                if t.kinds[name] == p4i.MatchField.LPM:
                    score += plen
            else:
                if best is None or score > best[0]:
                    best = (score, call)
        return best[1] if best else t.default

    def register_read(self, register: str, index: int) -> int:
        self.calls[f"register_read:{register}"] += 1
        assert 0 <= index < self.register_sizes[register], f"{register}[{index}] out of range"
        return self.registers[register].get(index, 0)

    def register_write(self, register: str, index: int, value: int) -> None:
        self.calls[f"register_write:{register}"] += 1
        assert 0 <= index < self.register_sizes[register], f"{register}[{index}] out of range"
        assert 0 <= value < 1 << 16
        self.registers[register][index] = value

    def counter_add(self, counter: str, index: int, nbytes: int) -> None:
        self.calls[f"counter:{counter}"] += 1
        assert 0 <= index < self.counter_sizes[counter], f"{counter}[{index}] out of range"
        cell = self.counters[counter].setdefault(index, [0, 0])
        cell[0] += 1
        cell[1] += nbytes

    def clone_session(self, session_id: int) -> list[tuple[int, int]]:
        self.calls["clone_session"] += 1
        return list(self.sessions.get(session_id, []))

    def digest(self, name: str, fields: Mapping[str, int]) -> None:
        self.calls[f"digest:{name}"] += 1
        assert list(fields) == self.digest_fields[name], f"{name}: fields {list(fields)}"
        self.digests.append((name, dict(fields)))


# --- A small lab: three servers, one client, one keyspace ---------------------------------------


@dataclass(frozen=True)
class Host:
    port: int
    mac: str
    ip: str
    udp_port: int = 0

    @property
    def mac_int(self) -> int:
        return int(self.mac.replace(":", ""), 16)

    @property
    def ip_int(self) -> int:
        return int(ipaddress.IPv4Address(self.ip))


SERVERS = {
    1: Host(1, "02:00:00:00:00:11", "10.0.0.11", 50001),
    2: Host(2, "02:00:00:00:00:12", "10.0.0.12", 50002),
    3: Host(3, "02:00:00:00:00:13", "10.0.0.13", 50003),
}
CLIENT = Host(4, "02:00:00:00:00:64", "10.0.0.100")
#: Server 4 is known to server_port / server_rewrite but has no clone session and no route.
LONELY = Host(6, "02:00:00:00:00:16", "10.0.0.16", 50006)
SWITCH_MAC = "02:00:00:00:00:fe"
SERVICE_IP = "10.0.0.200"
SERVICE_PORT = 50010
KEYSPACE_ID = SERVICE_PORT
#: The keyspace's slots start here in slot_map (its index 1).
SLOT_BASE = SLOT_COUNT
DEFAULT_OWNER = 1

T = "NetMigrateIngress."


def build_lab(state: MemoryState) -> MemoryState:
    for sid, h in SERVERS.items():
        state.add_entry(
            T + "server_port", {"meta.dest_server": sid}, T + "set_server_port", port=h.port
        )
        state.add_entry(
            "NetMigrateEgress.server_rewrite",
            {"meta.egress_server": sid},
            "NetMigrateEgress.rewrite_to_server",
            dst_mac=h.mac_int,
            dst_ip=h.ip_int,
            udp_port=h.udp_port,
        )
        state.add_entry(
            T + "sender_check",
            {
                "hdr.nm.source_id": sid,
                "standard_metadata.ingress_port": h.port,
                "hdr.ipv4.srcAddr": h.ip_int,
            },
            T + "sender_verified",
        )
        state.sessions[sid] = [(h.port, 0)]
    state.add_entry(
        T + "server_port", {"meta.dest_server": 4}, T + "set_server_port", port=LONELY.port
    )
    state.add_entry(
        "NetMigrateEgress.server_rewrite",
        {"meta.egress_server": 4},
        "NetMigrateEgress.rewrite_to_server",
        dst_mac=LONELY.mac_int,
        dst_ip=LONELY.ip_int,
        udp_port=LONELY.udp_port,
    )
    for h in (*SERVERS.values(), CLIENT):
        state.add_entry(
            T + "ipv4_lpm",
            {"hdr.ipv4.dstAddr": (h.ip_int, 32)},
            T + "ipv4_forward",
            dst_mac=h.mac_int,
            port=h.port,
        )
    service = int(ipaddress.IPv4Address(SERVICE_IP))
    state.add_entry(
        T + "ipv4_lpm",
        {"hdr.ipv4.dstAddr": (service, 32)},
        T + "ipv4_forward",
        dst_mac=SERVERS[DEFAULT_OWNER].mac_int,
        port=SERVERS[DEFAULT_OWNER].port,
    )
    state.add_entry(
        T + "keyspace",
        {"hdr.ipv4.dstAddr": service, "hdr.udp.dstPort": SERVICE_PORT},
        T + "set_keyspace",
        keyspace_id=KEYSPACE_ID,
        default_owner=DEFAULT_OWNER,
        slot_base=SLOT_BASE,
    )
    return state


def request(
    op: int,
    slot: int = 7,
    *,
    flags: int = 0,
    src: Host = CLIENT,
    dst_ip: str = SERVICE_IP,
    dport: int = SERVICE_PORT,
    source_id: int = 0,
    target_id: int = 0,
    request_id: int = 0x0000_0001_0000_002A,
    body: bytes = b"\x00\x03key",
    ttl: int = 64,
) -> Packet:
    """A NetMigrate datagram as host ``src`` sends it to the switch."""
    return (
        Ether(src=src.mac, dst=SWITCH_MAC)
        / IP(src=src.ip, dst=dst_ip, ttl=ttl, id=0x1234)
        / UDP(sport=40000, dport=dport)
        / NetMigrate(
            op=op,
            flags=flags,
            slot=slot,
            keyspace=KEYSPACE_ID,
            source_id=source_id,
            target_id=target_id,
            request_id=request_id,
        )
        / Raw(body)
    )


def ipv4_checksum_ok(frame: bytes) -> bool:
    """The IPv4 header of an Ethernet frame sums to zero (scapy's own checksum routine)."""
    ihl = frame[14] & 0x0F
    return checksum(frame[14 : 14 + 4 * ihl]) == 0


def parse(frame: bytes) -> Packet:
    return Ether(frame)


def steered_copy(sent: Packet, to: Host, flags: int) -> bytes:
    """``sent`` as the switch must steer it to ``to``: the expected frame, built with scapy."""
    pkt = sent.copy()
    pkt[Ether].dst = to.mac
    pkt[IP].dst = to.ip
    pkt[IP].ttl -= 1
    del pkt[IP].chksum
    pkt[UDP].dport = to.udp_port
    pkt[UDP].chksum = 0
    pkt[NetMigrate].flags = flags
    return bytes(pkt)


def plain_copy(sent: Packet, to: Host) -> bytes:
    """``sent`` as plain-forwarded to ``to``: destination MAC and TTL change, nothing else."""
    pkt = Ether(bytes(sent))
    pkt[Ether].dst = to.mac
    pkt[IP].ttl -= 1
    del pkt[IP].chksum
    return bytes(pkt)
