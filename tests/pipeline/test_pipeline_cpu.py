"""The CPU port: packet-out (direct or through ingress), SLOT_SET / SLOT_READ with packet-in."""

from __future__ import annotations

import pytest
from pipeline_lab import (
    CLIENT,
    SERVERS,
    SLOT_BASE,
    MemoryState,
    build_lab,
    ipv4_checksum_ok,
    parse,
    request,
)
from scapy.layers.inet import IP, UDP
from support.scapy_layer import NetMigrate, PacketOut

from netmigrate.protocol.constants import (
    CONTROL,
    CPU_PORT,
    PACKET_IN_REASON_SLOT_MAP,
    REPLY_BIT,
    SLOT_COUNT,
    Decision,
    Op,
)
from netmigrate.protocol.layout import encode_packet_out
from netmigrate.switch.pipeline import process, process_packet_out

SLOT = 5
IDX = SLOT_BASE + SLOT


def cpu_op(
    op: int, owner: int = 0, target: int = 0, slot: int = SLOT, epoch: int | None = 0
) -> bytes:
    body = b"" if epoch is None else CONTROL.pack(epoch)
    return bytes(request(op, slot, source_id=owner, target_id=target, body=body))


def from_cpu(state: MemoryState, frame: bytes, submit: int = 1, port: int = 0) -> list:
    return process(encode_packet_out(port, submit) + frame, CPU_PORT, state)


def test_slot_set_writes_and_answers_with_a_packet_in(state: MemoryState) -> None:
    frame = cpu_op(Op.SLOT_SET, 3, 2)
    [out] = from_cpu(state, frame)
    assert state.slot(IDX) == (3, 2)
    assert out.port == CPU_PORT
    assert out.metadata == {"ingress_port": CPU_PORT, "reason": PACKET_IN_REASON_SLOT_MAP}
    got, sent = parse(out.frame), parse(frame)
    assert got[NetMigrate].op == Op.SLOT_SET | REPLY_BIT
    assert (got[NetMigrate].source_id, got[NetMigrate].target_id) == (3, 2)
    assert got[UDP].chksum == 0
    # Nothing else changes: addresses, TTL, request id.
    assert got[IP].ttl == sent[IP].ttl and got[IP].dst == sent[IP].dst
    assert got[NetMigrate].request_id == sent[NetMigrate].request_id
    assert out.frame[:40] == frame[:40]
    assert ipv4_checksum_ok(out.frame)
    assert state.decisions() == {Decision.CPU_OP: 1}


def test_slot_set_zero_restores_the_default(state: MemoryState) -> None:
    state.set_slot(IDX, 3, 2)
    [out] = from_cpu(state, cpu_op(Op.SLOT_SET, 0, 0))
    assert state.slot(IDX) == (0, 0)
    assert parse(out.frame)[NetMigrate].source_id == 0


def test_slot_read_answers_the_raw_entry(state: MemoryState) -> None:
    state.set_slot(IDX, 0, 3)
    [out] = from_cpu(state, cpu_op(Op.SLOT_READ, 9, 9))
    got = parse(out.frame)[NetMigrate]
    assert (got.op, got.source_id, got.target_id) == (Op.SLOT_READ | REPLY_BIT, 0, 3)
    assert state.slot(IDX) == (0, 3)
    assert not any(k.startswith("register_write") for k in state.calls)


@pytest.mark.parametrize("op", [Op.SLOT_SET, Op.SLOT_READ])
def test_cpu_ops_from_a_data_port_are_rejected(state: MemoryState, op: int) -> None:
    state.set_slot(IDX, 3, 2)
    assert process(cpu_op(op, 1, 0), CLIENT.port, state) == []
    assert process(cpu_op(op, 1, 0), SERVERS[1].port, state) == []
    assert state.slot(IDX) == (3, 2)
    assert state.decisions() == {Decision.CPU_OP_REJECTED: 2}


def test_cpu_op_with_a_bad_slot_is_dropped(state: MemoryState) -> None:
    assert from_cpu(state, cpu_op(Op.SLOT_SET, 1, 2, slot=SLOT_COUNT)) == []
    assert not any(k.startswith("register") for k in state.calls)
    assert state.decisions() == {Decision.BAD_SLOT: 1}


def test_cpu_op_to_an_unknown_keyspace_goes_plain(state: MemoryState) -> None:
    frame = bytes(
        request(Op.SLOT_SET, SLOT, dst_ip=SERVERS[2].ip, source_id=1, target_id=2, body=b"")
    )
    [out] = from_cpu(state, frame)
    assert out.port == SERVERS[2].port
    assert not any(k.startswith("register") for k in state.calls)


def test_packet_out_direct_leaves_unchanged(state: MemoryState) -> None:
    frame = bytearray(bytes(request(Op.SET, SLOT)))
    frame[24] ^= 0xFF  # even a wrong IPv4 checksum: no processing at all
    [out] = from_cpu(state, bytes(frame), submit=0, port=SERVERS[3].port)
    assert out.port == SERVERS[3].port
    assert out.frame == bytes(frame)
    assert out.metadata == {}
    assert all(not v for v in state.counters.values())


def test_packet_out_direct_to_the_cpu_port_and_to_the_drop_port(state: MemoryState) -> None:
    frame = b"\x01\x02\x03"  # not even Ethernet: still sent as is
    [out] = from_cpu(state, frame, submit=0, port=CPU_PORT)
    assert (out.port, out.frame) == (CPU_PORT, frame)
    assert out.metadata == {"ingress_port": CPU_PORT, "reason": 0}
    assert from_cpu(state, frame, submit=0, port=511) == []


def test_packet_out_submitted_to_ingress_is_a_frame_from_the_cpu_port(
    state: MemoryState,
) -> None:
    sent = request(Op.GET, SLOT)
    outs = from_cpu(state, bytes(sent))
    [out] = outs
    assert out.port == SERVERS[1].port
    assert out.frame == process(bytes(sent), CLIENT.port, build_lab(MemoryState()))[0].frame
    # Counted with its packet_out header, as BMv2 counts the frame it received.
    assert state.counter("NetMigrateIngress.op_counter", Op.GET)[1] == len(bytes(sent)) + 2


def test_double_read_from_the_cpu_port_clones_without_packet_out(state: MemoryState) -> None:
    state.set_slot(IDX, 1, 2)
    sent = request(Op.GET, SLOT)
    clone, original = from_cpu(state, bytes(sent))
    assert (clone.port, original.port) == (SERVERS[2].port, SERVERS[1].port)
    assert parse(clone.frame)[IP].dst == SERVERS[2].ip  # re-parsed past the packet_out header
    assert len(clone.frame) == len(bytes(sent))


def test_too_short_for_packet_out_is_dropped(state: MemoryState) -> None:
    assert process(b"\x00", CPU_PORT, state) == []
    assert process(encode_packet_out(0, 1), CPU_PORT, state) == []


def test_process_packet_out_equals_process_with_the_header(state: MemoryState) -> None:
    twin = build_lab(MemoryState())
    cases = [
        (cpu_op(Op.SLOT_SET, 2, 3), {"egress_port": 0, "submit_to_ingress": 1, "_pad": 0}),
        (cpu_op(Op.SLOT_READ), {"egress_port": 0, "submit_to_ingress": 1}),
        (bytes(request(Op.GET, SLOT)), {"egress_port": 3, "submit_to_ingress": 0}),
        (bytes(request(Op.GET, SLOT)), {"egress_port": 2}),
    ]
    for payload, meta in cases:
        header = encode_packet_out(meta["egress_port"], meta.get("submit_to_ingress", 0))
        assert process_packet_out(payload, meta, state) == process(header + payload, CPU_PORT, twin)
    assert state.counters == twin.counters
    assert state.registers == twin.registers


@pytest.mark.parametrize(
    "meta", [{"egress_port": 512}, {"egress_port": -1}, {"egress_port": 1, "submit_to_ingress": 2}]
)
def test_process_packet_out_rejects_bad_metadata(state: MemoryState, meta: dict) -> None:
    with pytest.raises(ValueError, match="packet_out"):
        process_packet_out(b"x" * 60, meta, state)
    assert all(not v for v in state.counters.values())


def test_scapy_packet_out_layer_matches_the_encoder() -> None:
    assert bytes(PacketOut(egress_port=300, submit_to_ingress=1)) == encode_packet_out(300, 1)


def epoch_of(frame: bytes) -> int:
    return CONTROL.unpack_from(frame, len(frame) - CONTROL.size)[0]


def test_slot_set_raises_the_epoch_and_never_lowers_it(state: MemoryState) -> None:
    [out] = from_cpu(state, cpu_op(Op.SLOT_SET, 3, 0, epoch=7))
    assert (state.slot(IDX), state.epoch(IDX)) == ((3, 0), 7)
    assert epoch_of(out.frame) == 7
    [out] = from_cpu(state, cpu_op(Op.SLOT_SET, 2, 0, epoch=5))
    assert (state.slot(IDX), state.epoch(IDX)) == ((2, 0), 7)
    assert epoch_of(out.frame) == 7  # the answer says what the switch has


def test_slot_read_answers_the_epoch(state: MemoryState) -> None:
    state.set_epoch(IDX, 12)
    [out] = from_cpu(state, cpu_op(Op.SLOT_READ, epoch=0))
    assert epoch_of(out.frame) == 12
    assert state.epoch(IDX) == 12


@pytest.mark.parametrize("op", [Op.SLOT_SET, Op.SLOT_READ])
def test_cpu_ops_without_their_epoch_are_rejected(state: MemoryState, op: int) -> None:
    assert from_cpu(state, cpu_op(op, 3, 2, epoch=None)) == []
    assert state.slot(IDX) == (0, 0)
    assert state.decisions() == {Decision.CPU_OP_REJECTED: 1}
