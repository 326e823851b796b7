"""Data ops: stable slots to the owner, migrating writes to the target, double reads."""

from __future__ import annotations

import pytest
from pipeline_lab import (
    CLIENT,
    DEFAULT_OWNER,
    LONELY,
    SERVERS,
    SLOT_BASE,
    MemoryState,
    ipv4_checksum_ok,
    parse,
    request,
    steered_copy,
)
from scapy.layers.inet import IP, UDP
from support.scapy_layer import NetMigrate

from netmigrate.protocol.constants import (
    READ_OPS,
    SLOT_COUNT,
    SLOT_MAP_SIZE,
    WRITE_OPS,
    Decision,
    Flag,
    Op,
)
from netmigrate.switch.pipeline import process

SLOT = 7
IDX = SLOT_BASE + SLOT
DR = int(Flag.DOUBLE_READ)
TT = int(Flag.TO_TARGET)
RETRY = int(Flag.RETRY)
DATA_OPS = sorted(READ_OPS | WRITE_OPS)


def check_steered(frame: bytes) -> None:
    assert ipv4_checksum_ok(frame)
    assert parse(frame)[UDP].chksum == 0


@pytest.mark.parametrize("op", DATA_OPS)
def test_stable_slot_goes_to_the_default_owner(state: MemoryState, op: int) -> None:
    sent = request(op, SLOT, flags=RETRY)
    [out] = process(bytes(sent), CLIENT.port, state)
    owner = SERVERS[DEFAULT_OWNER]
    assert out.port == owner.port
    assert out.frame == steered_copy(sent, owner, RETRY)
    check_steered(out.frame)
    assert state.decisions() == {Decision.TO_OWNER: 1}
    assert state.counter("NetMigrateIngress.op_counter", op) == (1, len(bytes(sent)))


def test_stable_slot_goes_to_its_recorded_owner(state: MemoryState) -> None:
    state.set_slot(IDX, 3, 0)
    sent = request(Op.GET, SLOT)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.port == SERVERS[3].port
    assert out.frame == steered_copy(sent, SERVERS[3], 0)
    # Another slot of the keyspace is still at the default owner.
    [other] = process(bytes(request(Op.GET, SLOT + 1)), CLIENT.port, state)
    assert other.port == SERVERS[DEFAULT_OWNER].port


def test_client_cannot_set_the_switch_flags(state: MemoryState) -> None:
    sent = request(Op.SET, SLOT, flags=DR | TT | RETRY | 0x40)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert parse(out.frame)[NetMigrate].flags == RETRY | 0x40


@pytest.mark.parametrize("op", sorted(WRITE_OPS))
def test_migrating_write_goes_to_the_target(state: MemoryState, op: int) -> None:
    state.set_slot(IDX, 0, 2)  # default owner 1 -> 2
    sent = request(op, SLOT, flags=RETRY)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.port == SERVERS[2].port
    assert out.frame == steered_copy(sent, SERVERS[2], RETRY | TT)
    check_steered(out.frame)
    assert state.decisions() == {Decision.REDIRECTED: 1}
    assert state.calls["clone_session"] == 0


@pytest.mark.parametrize("op", sorted(READ_OPS))
def test_migrating_read_is_double_read(state: MemoryState, op: int) -> None:
    state.set_slot(IDX, 3, 2)  # owner 3 -> 2
    sent = request(op, SLOT, flags=TT)  # a forged TO_TARGET must not survive on the owner copy
    outs = process(bytes(sent), CLIENT.port, state)
    assert [o.port for o in outs] == [SERVERS[2].port, SERVERS[3].port]  # clone first, as BMv2
    clone, original = outs
    assert original.frame == steered_copy(sent, SERVERS[3], DR)
    assert clone.frame == steered_copy(sent, SERVERS[2], DR | TT)
    for o in outs:
        check_steered(o.frame)
        assert parse(o.frame)[IP].ttl == 63
        assert o.metadata == {}
    assert state.decisions() == {Decision.DOUBLE_READ: 1}


def test_double_read_without_a_clone_session_sends_only_the_owner_copy(
    state: MemoryState,
) -> None:
    state.set_slot(IDX, 1, 4)  # target: server 4, known to server_port but without a session
    [out] = process(bytes(request(Op.GET, SLOT)), CLIENT.port, state)
    assert out.port == SERVERS[1].port
    assert parse(out.frame)[NetMigrate].flags == DR
    assert state.decisions() == {Decision.DOUBLE_READ: 1}


def test_double_read_clone_follows_every_replica(state: MemoryState) -> None:
    state.set_slot(IDX, 1, 2)
    state.sessions[2] = [(SERVERS[2].port, 0), (LONELY.port, 1)]
    outs = process(bytes(request(Op.MGET, SLOT)), CLIENT.port, state)
    assert [o.port for o in outs] == [SERVERS[2].port, LONELY.port, SERVERS[1].port]
    assert outs[0].frame == outs[1].frame  # both replicas are the rewrite for server 2


def test_unknown_owner_is_dropped_without_clone(state: MemoryState) -> None:
    state.set_slot(IDX, 9, 2)  # owner 9 is unknown to server_port
    assert process(bytes(request(Op.GET, SLOT)), CLIENT.port, state) == []
    assert state.decisions() == {Decision.NO_SERVER: 1}
    assert state.calls["clone_session"] == 0


def test_unknown_target_of_a_write_is_dropped(state: MemoryState) -> None:
    state.set_slot(IDX, 1, 9)
    assert process(bytes(request(Op.SET, SLOT)), CLIENT.port, state) == []
    assert state.decisions() == {Decision.NO_SERVER: 1}


def test_server_without_rewrite_entry_keeps_its_addresses(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.add_entry(t + "server_port", {"meta.dest_server": 7}, t + "set_server_port", port=7)
    state.set_slot(IDX, 7, 0)
    sent = request(Op.GET, SLOT)
    [out] = process(bytes(sent), CLIENT.port, state)
    got = parse(out.frame)
    assert out.port == 7
    assert (got.dst, got[IP].dst, got[UDP].dport) == (sent.dst, sent[IP].dst, sent[UDP].dport)
    check_steered(out.frame)


@pytest.mark.parametrize("slot", [SLOT_COUNT, 0xFFFF])
def test_bad_slot_goes_to_the_default_owner_without_touching_slot_map(
    state: MemoryState, slot: int
) -> None:
    state.set_slot(SLOT_BASE + (slot % SLOT_COUNT), 3, 2)
    sent = request(Op.SET, slot)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.frame == steered_copy(sent, SERVERS[DEFAULT_OWNER], 0)
    assert state.decisions() == {Decision.BAD_SLOT: 1}
    assert not any(k.startswith("register") for k in state.calls)


def test_keyspace_past_the_end_of_slot_map_is_a_bad_slot(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.tables[t + "keyspace"].entries.clear()
    state.add_entry(
        t + "keyspace",
        {"hdr.ipv4.dstAddr": 0x0A0000C8, "hdr.udp.dstPort": 50010},
        t + "set_keyspace",
        keyspace_id=50010,
        default_owner=2,
        slot_base=SLOT_MAP_SIZE - 4,
    )
    [inside] = process(bytes(request(Op.GET, 3)), CLIENT.port, state)
    [past] = process(bytes(request(Op.GET, 4)), CLIENT.port, state)
    assert inside.port == past.port == SERVERS[2].port
    assert state.decisions() == {Decision.TO_OWNER: 1, Decision.BAD_SLOT: 1}
    assert state.calls["register_read:NetMigrateIngress.slot_map"] == 1


def test_stable_get_makes_only_the_state_calls_of_the_p4_program(state: MemoryState) -> None:
    process(bytes(request(Op.GET, SLOT)), CLIENT.port, state)
    assert dict(state.calls) == {
        "counter:NetMigrateIngress.op_counter": 1,
        "table:NetMigrateIngress.keyspace": 1,
        "register_read:NetMigrateIngress.slot_map": 1,
        "table:NetMigrateIngress.server_port": 1,
        "counter:NetMigrateIngress.decision_counter": 1,
        "table:NetMigrateEgress.server_rewrite": 1,
    }


def test_byte_counters_count_the_frame_at_ingress(state: MemoryState) -> None:
    frames = [bytes(request(Op.SET, SLOT, body=b"x" * n)) for n in (0, 100, 1000)]
    for f in frames:
        process(f, CLIENT.port, state)
    total = sum(len(f) for f in frames)
    assert state.counter("NetMigrateIngress.op_counter", Op.SET) == (3, total)
    assert state.counter("NetMigrateIngress.decision_counter", Decision.TO_OWNER) == (3, total)


def test_jumbo_payload_is_carried_unchanged(state: MemoryState) -> None:
    body = bytes(range(256)) * 34  # ~8.7 kB, inside the lab's MTU 9000
    sent = request(Op.SET, SLOT, body=body)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.frame.endswith(body)
    assert out.frame == steered_copy(sent, SERVERS[DEFAULT_OWNER], 0)


def test_drop_port_in_server_port_or_clone_session_means_no_copy(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.add_entry(t + "server_port", {"meta.dest_server": 8}, t + "set_server_port", port=511)
    state.sessions[8] = [(511, 0)]
    state.set_slot(IDX, 1, 8)  # reads: owner copy to port 1, clone to session 8 (port 511)
    [owner_copy] = process(bytes(request(Op.GET, SLOT)), CLIENT.port, state)
    assert owner_copy.port == SERVERS[1].port
    assert process(bytes(request(Op.SET, SLOT)), CLIENT.port, state) == []  # to port 511
    assert state.decisions() == {Decision.DOUBLE_READ: 1, Decision.REDIRECTED: 1}
