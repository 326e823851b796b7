"""SLOT_START / SLOT_COMPLETE: accepted only from the slot's owner, naming a known server."""

from __future__ import annotations

import pytest
from pipeline_lab import (
    CLIENT,
    KEYSPACE_ID,
    SERVERS,
    SLOT_BASE,
    Host,
    MemoryState,
    request,
    steered_copy,
)
from scapy.packet import Packet

from netmigrate.protocol.constants import CONTROL, SLOT_COUNT, Decision, Op
from netmigrate.switch.pipeline import process

SLOT = 100
IDX = SLOT_BASE + SLOT
DIGEST = "slot_transition_t"


def transition(
    op: int,
    source_id: int,
    target_id: int,
    *,
    sender: Host | None = None,
    slot: int = SLOT,
    epoch: int | None = 1,
) -> Packet:
    """A transition of the slot's migration ``epoch`` (None: without the control body)."""
    host = sender or SERVERS[source_id]
    body = b"" if epoch is None else CONTROL.pack(epoch)
    return request(op, slot, src=host, source_id=source_id, target_id=target_id, body=body)


def send(state: MemoryState, pkt: Packet, port: int | None = None) -> list:
    return process(bytes(pkt), pkt_port(pkt) if port is None else port, state)


def pkt_port(pkt: Packet) -> int:
    for h in (*SERVERS.values(), CLIENT):
        if h.mac == pkt.src:
            return h.port
    raise AssertionError(pkt.src)


def test_start_from_the_owner_flips_the_slot_and_reaches_the_target(state: MemoryState) -> None:
    sent = transition(Op.SLOT_START, 1, 2)
    [out] = send(state, sent)
    assert out.port == SERVERS[2].port
    assert out.frame == steered_copy(sent, SERVERS[2], 0)
    assert state.slot(IDX) == (0, 2)  # owner byte stays "keyspace default"
    assert state.digests == [
        (
            DIGEST,
            {
                "keyspace": KEYSPACE_ID,
                "slot": SLOT,
                "op": Op.SLOT_START,
                "owner": 1,
                "target": 2,
            },
        )
    ]
    assert state.decisions() == {Decision.TRANSITION_ACCEPTED: 1}


def test_resent_start_is_accepted_without_change_or_digest(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2))
    [out] = send(state, transition(Op.SLOT_START, 1, 2))
    assert out.port == SERVERS[2].port
    assert state.slot(IDX) == (0, 2)
    assert len(state.digests) == 1
    assert state.decisions() == {Decision.TRANSITION_ACCEPTED: 2}


def test_start_from_a_recorded_owner_keeps_its_owner_byte(state: MemoryState) -> None:
    state.set_slot(IDX, 3, 0)
    [out] = send(state, transition(Op.SLOT_START, 3, 2))
    assert out.port == SERVERS[2].port
    assert state.slot(IDX) == (3, 2)
    assert state.digests[0][1]["owner"] == 3


@pytest.mark.parametrize(
    ("why", "pkt", "port"),
    [
        ("wrong port", transition(Op.SLOT_START, 1, 2), SERVERS[3].port),
        ("wrong source IP", transition(Op.SLOT_START, 1, 2, sender=SERVERS[3]), SERVERS[1].port),
        ("source id of another server", transition(Op.SLOT_START, 3, 2), None),
        ("from a client", transition(Op.SLOT_START, 1, 2, sender=CLIENT), CLIENT.port),
        ("no target", transition(Op.SLOT_START, 1, 0), None),
        ("target is the owner", transition(Op.SLOT_START, 1, 1), None),
        ("unknown target", transition(Op.SLOT_START, 1, 9), None),
        ("bad slot", transition(Op.SLOT_START, 1, 2, slot=SLOT_COUNT), None),
        ("no epoch", transition(Op.SLOT_START, 1, 2, epoch=None), None),
    ],
)
def test_start_rejected(state: MemoryState, why: str, pkt: Packet, port: int | None) -> None:
    assert send(state, pkt, port) == [], why
    assert state.slot(IDX) == (0, 0)
    assert not any(k.startswith("register_write") for k in state.calls)
    assert state.digests == []
    assert state.decisions() == {Decision.TRANSITION_REJECTED: 1}


def test_start_to_another_target_while_migrating_is_rejected(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2))
    assert send(state, transition(Op.SLOT_START, 1, 3)) == []
    assert state.slot(IDX) == (0, 2)
    assert len(state.digests) == 1


def test_complete_hands_the_slot_to_the_target(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2))
    sent = transition(Op.SLOT_COMPLETE, 1, 2)
    [out] = send(state, sent)
    assert out.frame == steered_copy(sent, SERVERS[2], 0)
    assert state.slot(IDX) == (2, 0)
    assert state.digests[-1] == (
        DIGEST,
        {
            "keyspace": KEYSPACE_ID,
            "slot": SLOT,
            "op": Op.SLOT_COMPLETE,
            "owner": 1,
            "target": 2,
        },
    )
    # Requests now go to the new owner.
    [get] = process(bytes(request(Op.GET, SLOT)), CLIENT.port, state)
    assert get.port == SERVERS[2].port


def test_resent_complete_is_accepted_without_change_or_digest(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2))
    send(state, transition(Op.SLOT_COMPLETE, 1, 2))
    [out] = send(state, transition(Op.SLOT_COMPLETE, 1, 2))
    assert out.port == SERVERS[2].port
    assert state.slot(IDX) == (2, 0)
    assert len(state.digests) == 2
    assert state.decisions() == {Decision.TRANSITION_ACCEPTED: 3}


@pytest.mark.parametrize(
    ("why", "pkt", "port"),
    [
        ("target mismatch", transition(Op.SLOT_COMPLETE, 1, 3), None),
        ("not from the owner", transition(Op.SLOT_COMPLETE, 3, 2), None),
        ("owner's id from the target's port", transition(Op.SLOT_COMPLETE, 1, 2), SERVERS[2].port),
        ("bad slot", transition(Op.SLOT_COMPLETE, 1, 2, slot=0xFFFF), None),
        ("no epoch", transition(Op.SLOT_COMPLETE, 1, 2, epoch=None), None),
    ],
)
def test_complete_rejected(state: MemoryState, why: str, pkt: Packet, port: int | None) -> None:
    send(state, transition(Op.SLOT_START, 1, 2))
    assert send(state, pkt, port) == [], why
    assert state.slot(IDX) == (0, 2)
    assert len(state.digests) == 1
    assert state.decisions()[Decision.TRANSITION_REJECTED] == 1


def test_complete_of_a_stable_slot_is_rejected(state: MemoryState) -> None:
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 2)) == []
    assert state.slot(IDX) == (0, 0)


def test_complete_with_unknown_target_server_is_rejected(state: MemoryState) -> None:
    state.set_slot(IDX, 1, 9)  # migrating to 9, which the switch does not know
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 9)) == []
    assert state.slot(IDX) == (1, 9)


# --- Epochs: a transition of an earlier migration of the slot changes nothing ----------------


def test_start_records_its_epoch(state: MemoryState) -> None:
    state.set_epoch(IDX, 4)
    send(state, transition(Op.SLOT_START, 1, 2, epoch=9))
    assert state.slot(IDX) == (0, 2)
    assert state.epoch(IDX) == 9


@pytest.mark.parametrize("epoch", [3, 4])
def test_start_not_above_the_slots_epoch_is_stale(state: MemoryState, epoch: int) -> None:
    state.set_epoch(IDX, 4)
    assert send(state, transition(Op.SLOT_START, 1, 2, epoch=epoch)) == []
    assert (state.slot(IDX), state.epoch(IDX)) == ((0, 0), 4)
    assert state.digests == []
    assert not any(k.startswith("register_write") for k in state.calls)
    assert state.decisions() == {Decision.TRANSITION_STALE: 1}


def test_resent_start_needs_the_migrations_epoch(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2, epoch=5))
    for epoch in (4, 6):
        assert send(state, transition(Op.SLOT_START, 1, 2, epoch=epoch)) == []
    assert (state.slot(IDX), state.epoch(IDX)) == ((0, 2), 5)
    assert state.decisions() == {Decision.TRANSITION_ACCEPTED: 1, Decision.TRANSITION_STALE: 2}


@pytest.mark.parametrize("epoch", [4, 6])
def test_complete_of_another_epoch_is_stale(state: MemoryState, epoch: int) -> None:
    send(state, transition(Op.SLOT_START, 1, 2, epoch=5))
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=epoch)) == []
    assert (state.slot(IDX), state.epoch(IDX)) == ((0, 2), 5)
    assert len(state.digests) == 1
    assert state.decisions()[Decision.TRANSITION_STALE] == 1


def test_resent_complete_needs_the_migrations_epoch(state: MemoryState) -> None:
    send(state, transition(Op.SLOT_START, 1, 2, epoch=5))
    send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=5))
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=4)) == []
    [out] = send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=5))
    assert out.port == SERVERS[2].port
    assert (state.slot(IDX), state.epoch(IDX)) == ((2, 0), 5)
    assert state.decisions()[Decision.TRANSITION_STALE] == 1


def test_replays_of_an_earlier_migration_during_a_new_one_change_nothing(
    state: MemoryState,
) -> None:
    # A -> B (epoch 1), B -> A (2), then a new A -> B (3): the first migration's START and
    # COMPLETE, replayed now, would otherwise hand the slot to B before its copy is done.
    old_start = transition(Op.SLOT_START, 1, 2, epoch=1)
    old_complete = transition(Op.SLOT_COMPLETE, 1, 2, epoch=1)
    for pkt in (
        old_start,
        old_complete,
        transition(Op.SLOT_START, 2, 1, epoch=2),
        transition(Op.SLOT_COMPLETE, 2, 1, epoch=2),
        transition(Op.SLOT_START, 1, 2, epoch=3),
    ):
        [_] = send(state, pkt)
    assert (state.slot(IDX), state.epoch(IDX)) == ((1, 2), 3)
    before = len(state.digests)
    assert send(state, old_start) == []
    assert send(state, old_complete) == []
    assert (state.slot(IDX), state.epoch(IDX)) == ((1, 2), 3)
    assert len(state.digests) == before
    assert state.decisions()[Decision.TRANSITION_STALE] == 2
    [_] = send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=3))
    assert state.slot(IDX) == (2, 0)


def test_a_rejected_transition_is_not_counted_stale(state: MemoryState) -> None:
    # Not from the owner: rejected whatever its epoch says.
    state.set_epoch(IDX, 4)
    assert send(state, transition(Op.SLOT_START, 3, 2, epoch=1)) == []
    assert state.decisions() == {Decision.TRANSITION_REJECTED: 1}


def test_a_slot_restored_without_its_epoch_takes_the_migrations(state: MemoryState) -> None:
    # After a switch restart the controller writes the entry back, the epoch unknown (0): the
    # migration in flight finishes, and from then on its epoch is the slot's.
    state.set_slot(IDX, 1, 2)
    [_] = send(state, transition(Op.SLOT_START, 1, 2, epoch=7))  # a resend
    assert state.epoch(IDX) == 7
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=6)) == []
    [_] = send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=7))
    assert (state.slot(IDX), state.epoch(IDX)) == ((2, 0), 7)
    assert state.decisions()[Decision.TRANSITION_STALE] == 1


def test_a_complete_restored_without_its_epoch_takes_the_migrations(state: MemoryState) -> None:
    state.set_slot(IDX, 1, 2)
    [_] = send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=7))
    assert (state.slot(IDX), state.epoch(IDX)) == ((2, 0), 7)
    [_] = send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=7))  # resent
    assert send(state, transition(Op.SLOT_COMPLETE, 1, 2, epoch=3)) == []
