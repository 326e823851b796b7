"""Unit tests of the switch runtime's parts (no process, no root): P4Info comparison, table
lookups per match kind, digest buffering, arbitration bookkeeping, fault specs."""

from __future__ import annotations

import grpc
import pytest
from finsy.proto import U128, p4i, p4r

from netmigrate.resources import p4info_path
from netmigrate.switch.arbitration import Arbitration, Controller
from netmigrate.switch.bytestrings import decode_uint, encode_uint
from netmigrate.switch.dataplane import decode_controller_header, encode_controller_header
from netmigrate.switch.digests import DigestConfig, DigestEngine
from netmigrate.switch.errors import P4RTError
from netmigrate.switch.faults import Fault, FaultError, parse_fault
from netmigrate.switch.interfaces import ActionCall
from netmigrate.switch.p4info import (
    EXACT,
    LPM,
    OPTIONAL,
    RANGE,
    TERNARY,
    MatchFieldInfo,
    P4InfoIndex,
    TableInfo,
    first_difference,
    load_p4info,
)
from netmigrate.switch.state import SwitchState
from netmigrate.switch.tables import Entry, Table


def test_first_difference_equal_and_named():
    a = load_p4info(p4info_path())
    b = load_p4info(p4info_path())
    assert first_difference(a, b) is None
    b.counters[0].size = 7
    name = a.counters[0].preamble.name
    assert first_difference(a, b) == f"counters[{name!r}].size is 7, expected {a.counters[0].size}"
    c = load_p4info(p4info_path())
    c.type_info.structs["slot_transition_t"].members[0].name = "ks"
    assert (
        first_difference(a, c)
    ) == "type_info.structs['slot_transition_t'].members['keyspace'] is missing"


def _table(kinds: list[int], width: int = 32, size: int = 0) -> Table:
    fields = tuple(MatchFieldInfo(i + 1, f"f{i}", width, k) for i, k in enumerate(kinds))
    info = TableInfo(
        id=1, name="t", alias="t", match_fields=fields, fields_by_id={f.id: f for f in fields},
        actions={}, size=size, const_default_action_id=0, initial_default_action=None,
        is_const=False, indirect=False, direct_resource_ids=(),
    )  # fmt: skip
    default = Entry((), 0, 0, (), ActionCall("miss", {}, hit=False))
    return Table(info, default)


def _entry(match, action: str, priority: int = 0) -> Entry:
    return Entry(tuple(match), priority, 0, (), ActionCall(action, {}, hit=True))


def test_lpm_longest_prefix_wins_and_delete_restores():
    t = _table([LPM])
    t.insert(_entry([(0x0A000000, 8)], "eight"))
    t.insert(_entry([(0x0A010000, 16)], "sixteen"))
    t.insert(_entry([(0x0A010200, 24)], "twentyfour"))
    assert t.lookup({"f0": 0x0A010203}).action == "twentyfour"
    assert t.lookup({"f0": 0x0A01FF03}).action == "sixteen"
    assert t.lookup({"f0": 0x0AFF0000}).action == "eight"
    miss = t.lookup({"f0": 0x0B000000})
    assert (miss.action, miss.hit) == ("miss", False)
    t.delete(((( 0x0A010200, 24),), 0))  # fmt: skip
    assert t.lookup({"f0": 0x0A010203}).action == "sixteen"
    with pytest.raises(P4RTError) as info:
        t.delete((((0x0A010200, 24),), 0))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_lpm_with_exact_field():
    t = _table([EXACT, LPM])
    t.insert(_entry([1, (0x0A000000, 8)], "vrf1"))
    t.insert(_entry([2, (0x0A000000, 16)], "vrf2"))
    assert t.lookup({"f0": 1, "f1": 0x0A000001}).action == "vrf1"
    assert t.lookup({"f0": 2, "f1": 0x0A000001}).action == "vrf2"
    assert t.lookup({"f0": 2, "f1": 0x0A010001}).hit is False


def test_exact_and_capacity():
    t = _table([EXACT, EXACT], size=2)
    t.insert(_entry([1, 2], "a"))
    t.insert(_entry([2, 1], "b"))
    assert t.lookup({"f0": 2, "f1": 1}).action == "b"
    with pytest.raises(P4RTError) as info:
        t.insert(_entry([1, 2], "again"))
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(P4RTError) as info:
        t.insert(_entry([3, 3], "c"))
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    t.modify(_entry([1, 2], "a2"))
    assert t.lookup({"f0": 1, "f1": 2}).action == "a2"


def test_ternary_range_optional_by_priority():
    t = _table([TERNARY, RANGE, OPTIONAL], width=16)
    t.insert(_entry([(0x0100, 0xFF00), (0, 0xFFFF), None], "low", priority=1))
    t.insert(_entry([(0x0100, 0xFF00), (10, 20), None], "range", priority=5))
    t.insert(_entry([(0, 0), (0, 0xFFFF), 7], "opt", priority=9))
    assert t.lookup({"f0": 0x0142, "f1": 15, "f2": 1}).action == "range"
    assert t.lookup({"f0": 0x0142, "f1": 25, "f2": 1}).action == "low"
    assert t.lookup({"f0": 0x0142, "f1": 15, "f2": 7}).action == "opt"
    assert t.lookup({"f0": 0x0242, "f1": 15, "f2": 1}).hit is False


def test_state_initial_defaults_come_from_the_p4info():
    index = P4InfoIndex(load_p4info(p4info_path()))
    state = SwitchState(index, 255)
    call = state.table_lookup("NetMigrateIngress.keyspace", {"hdr.ipv4.dstAddr": 1,
                                                             "hdr.udp.dstPort": 2})  # fmt: skip
    assert (call.action, call.hit) == ("NetMigrateIngress.not_keyspace", False)
    assert state.table_lookup("ipv4_lpm", {"hdr.ipv4.dstAddr": 1}).action.endswith(".drop")
    # Registers keep their width; counters count.
    state.register_write("NetMigrateIngress.slot_map", 3, 0x1FFFF)
    assert state.register_read("NetMigrateIngress.slot_map", 3) == 0xFFFF
    assert state.register_read("NetMigrateIngress.slot_map", 10**9) == 0
    state.counter_add("NetMigrateIngress.op_counter", 1, 100)
    state.counter_add("NetMigrateIngress.op_counter", 1, 50)
    counter_id = index.counters_by_name["op_counter"].id
    assert (state.counters[counter_id][0][1], state.counters[counter_id][1][1]) == (2, 150)


def test_bytestrings():
    assert decode_uint(b"\x00\x00\x63", 8, "x") == 0x63  # padding is fine
    assert encode_uint(0) == b"\x00" and encode_uint(0x0100) == b"\x01\x00"
    for bad in (b"", b"\x01\x00"):
        with pytest.raises(P4RTError) as info:
            decode_uint(bad, 8, "field")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_controller_headers_roundtrip():
    index = P4InfoIndex(load_p4info(p4info_path()))
    header = encode_controller_header(
        {"egress_port": 300, "submit_to_ingress": 1}, index.packet_out
    )
    assert len(header) == 2
    fields, rest = decode_controller_header(header + b"xyz", index.packet_out)
    assert fields == {"egress_port": 300, "submit_to_ingress": 1, "_pad": 0} and rest == b"xyz"
    with pytest.raises(P4RTError):
        encode_controller_header({"egress_port": 512}, index.packet_out)


class FakeClock:
    def __init__(self) -> None:
        self.calls: list[tuple[float, object]] = []

    def schedule(self, delay: float, callback) -> None:
        self.calls.append((delay, callback))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for _, cb in calls:
            cb()


def test_digest_engine_buffers_dedups_and_acks():
    clock = FakeClock()
    sent: list[tuple[int, int, list]] = []
    engine = DigestEngine(clock.schedule, lambda d, lid, msgs: sent.append((d, lid, msgs)) or True)
    engine.push(7, (1, 2))
    assert engine.stats.disabled_drops == 1 and not clock.calls
    engine.enable(7, DigestConfig(max_timeout_ns=5_000_000, max_list_size=3, ack_timeout_ns=10**12))
    engine.push(7, (1, 2))
    engine.push(7, (1, 2))  # duplicate within the buffer
    engine.push(7, (3, 4))
    assert clock.calls[0][0] == pytest.approx(0.005) and not sent
    clock.run()
    assert sent == [(7, 1, [(1, 2), (3, 4)])]
    engine.push(7, (1, 2))  # cached (sent, unacknowledged)
    assert engine.stats.duplicates == 2
    assert engine.ack(7, 1)
    engine.push(7, (1, 2))
    engine.push(7, (5, 6))
    engine.push(7, (7, 8))  # list full: sent at once
    assert sent[-1] == (7, 2, [(1, 2), (5, 6), (7, 8)])
    assert not engine.ack(8, 1)


def _upd(eid: int | None, device: int = 1, role: str = "") -> p4r.MasterArbitrationUpdate:
    u = p4r.MasterArbitrationUpdate(device_id=device)
    if eid is not None:
        u.election_id.CopyFrom(U128.encode(eid))
    if role:
        u.role.name = role
    return u


def _codes(notes) -> dict[str, int]:
    return {c.peer: m.arbitration.status.code for c, m in notes}


def test_arbitration_rules():
    arb = Arbitration(1)
    a, b, c, d = (Controller(peer=p) for p in "abcd")
    assert _codes(arb.arbitrate(a, _upd(10))) == {"a": 0}  # OK: primary
    assert _codes(arb.arbitrate(b, _upd(5))) == {"b": 6}  # ALREADY_EXISTS, only to b
    assert _codes(arb.arbitrate(c, _upd(20))) == {"a": 6, "b": 6, "c": 0}
    arb.check_primary(1, "", 20)
    with pytest.raises(P4RTError) as info:
        arb.check_primary(1, "", 10)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(P4RTError) as info:
        arb.arbitrate(d, _upd(5))  # taken by b
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(P4RTError) as info:
        arb.arbitrate(d, _upd(1, device=2))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    # The primary leaves: everyone hears NOT_FOUND with the highest id seen.
    notes = arb.remove(c)
    assert _codes(notes) == {"a": 5, "b": 5}
    assert all(U128.decode(m.arbitration.election_id) == 20 for _, m in notes)
    # A lower id cannot take over; the remembered highest can.
    assert _codes(arb.arbitrate(a, _upd(15))) == {"a": 5}
    assert _codes(arb.arbitrate(a, _upd(20))) == {"a": 0, "b": 6}
    # A stream without an election id is a backup for good; roles are separate.
    assert _codes(arb.arbitrate(d, _upd(None))) == {"d": 6}
    e = Controller(peer="e")
    assert _codes(arb.arbitrate(e, _upd(1, role="other"))) == {"e": 0}
    assert {p.peer for p in arb.primaries} == {"a", "e"}
    with pytest.raises(P4RTError) as info:
        arb.arbitrate(e, _upd(2, role="x"))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("text", "port", "fault"),
    [
        ("1:drop=0.01,delay_ms=5", 1, Fault(0.01, 5.0)),
        ("2:delay_ms=1.5", 2, Fault(0.0, 1.5)),
        ("3:", 3, Fault()),
        ("4:none", 4, Fault()),
    ],
)
def test_parse_fault(text, port, fault):
    assert parse_fault(text) == (port, fault)


@pytest.mark.parametrize(
    "text", ["1", "x:drop=1", "0:drop=0.1", "1:drop=-1", "1:delay_ms=70000", "1:drop=a", "1:x=1"]
)
def test_parse_fault_rejects(text):
    with pytest.raises(FaultError):
        parse_fault(text)


def test_p4info_index_names_and_aliases():
    index = P4InfoIndex(load_p4info(p4info_path()))
    assert index.tables_by_name["keyspace"] is index.tables_by_name["NetMigrateIngress.keyspace"]
    assert [m.name for m in index.packet_in] == ["ingress_port", "reason"]
    assert index.registers_by_name["slot_map"].bitwidth == 16
    info = p4i.P4Info()
    info.CopyFrom(index.p4info)
    assert first_difference(index.p4info, info) is None
