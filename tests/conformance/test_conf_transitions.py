"""SLOT_START / SLOT_COMPLETE: accepted only from the slot's owner with the epoch of the slot's
migration, with digests; stale ones (an earlier migration's) dropped and counted."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nmconf_driver import EPOCH, Conformance

from netmigrate.protocol.constants import SLOT_COUNT, Flag, Op

pytestmark = pytest.mark.root

PAYLOAD = b"\x00\x01k"


def _transition(sw: Conformance, op: Op, ks, slot: int, source: int, target: int, **kw):
    """(port, frame) of server ``source`` sending ``op`` for ``slot`` to the keyspace (of the
    migration with epoch ``epoch``, default EPOCH)."""
    server = sw.world.servers[source]
    header = sw.header(op, ks, slot, source_id=source, target_id=target)
    return sw.from_server(server, header, ks, **kw)


def test_start_from_the_owner_flips_the_slot_to_migrating(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    s1, s2 = sw.world.servers[1], sw.world.servers[2]
    port, sent = _transition(sw, Op.SLOT_START, ka, slot, 1, 2)
    with sw.counting() as delta:
        sw.send(port, sent)
        sw.expect(s2.port, sw.steered(sent, s2))
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_ACCEPTED": 1}
    assert sw.expect_digest() == {
        "keyspace": ka.id,
        "slot": slot,
        "op": Op.SLOT_START,
        "owner": 1,
        "target": 2,
    }
    # The owner byte stays "default owner" (0); the target is set.
    assert sw.slot_read(ka, slot) == (0, 2)

    # Later requests: writes to the target, reads double-read.
    write = sw.from_client(sw.header(Op.SET, ka, slot), ka, payload=PAYLOAD)
    sw.send(sw.world.client.switch_port, write)
    sw.expect(s2.port, sw.steered(write, s2, Flag.TO_TARGET))
    read = sw.from_client(sw.header(Op.GET, ka, slot), ka, payload=PAYLOAD)
    sw.send(sw.world.client.switch_port, read)
    sw.expect(s1.port, sw.steered(read, s1, Flag.DOUBLE_READ))
    sw.expect(s2.port, sw.steered(read, s2, Flag.DOUBLE_READ | Flag.TO_TARGET))
    sw.expect_none()
    sw.expect_no_digest()


def test_resent_start_is_accepted_again_without_change(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    s2 = sw.world.servers[2]
    port, sent = _transition(sw, Op.SLOT_START, ka, slot, 1, 2)
    sw.send(port, sent)
    sw.expect(s2.port, sw.steered(sent, s2))
    sw.expect_digest()
    port, again = _transition(sw, Op.SLOT_START, ka, slot, 1, 2)
    with sw.counting() as delta:
        sw.send(port, again)
        sw.expect(s2.port, sw.steered(again, s2))
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_ACCEPTED": 1}
    sw.expect_no_digest()  # a resend changes nothing, so it reports nothing
    assert sw.slot_read(ka, slot) == (0, 2)


def test_complete_from_the_owner_hands_the_slot_to_the_target(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    s2 = sw.world.servers[2]
    sw.slot_set(ka, slot, 0, 2)
    port, sent = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2)
    with sw.counting() as delta:
        sw.send(port, sent)
        sw.expect(s2.port, sw.steered(sent, s2))
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_ACCEPTED": 1}
    assert sw.expect_digest() == {
        "keyspace": ka.id,
        "slot": slot,
        "op": Op.SLOT_COMPLETE,
        "owner": 1,
        "target": 2,
    }
    assert sw.slot_read(ka, slot) == (2, 0)
    for op in (Op.GET, Op.SET):
        req = sw.from_client(sw.header(op, ka, slot), ka, payload=PAYLOAD)
        sw.send(sw.world.client.switch_port, req)
        sw.expect(s2.port, sw.steered(req, s2))
    sw.expect_none()

    # A resent COMPLETE: accepted and delivered, no change, no digest.
    port, again = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2)
    with sw.counting() as delta:
        sw.send(port, again)
        sw.expect(s2.port, sw.steered(again, s2))
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_ACCEPTED": 1}
    sw.expect_no_digest()
    assert sw.slot_read(ka, slot) == (2, 0)


def test_a_slot_migrates_twice_through_explicit_owners(sw: Conformance):
    """KB (default owner 2): 2 -> 3, then 3 -> 1; each step only from the current owner."""
    kb = sw.world.kb
    slot = sw.fresh_slot()
    steps = [(Op.SLOT_START, 2, 3, 1, (0, 3)), (Op.SLOT_COMPLETE, 2, 3, 1, (3, 0))]
    steps += [(Op.SLOT_START, 3, 1, 2, (3, 1)), (Op.SLOT_COMPLETE, 3, 1, 2, (1, 0))]
    for op, source, target, epoch, after in steps:
        port, sent = _transition(sw, op, kb, slot, source, target, epoch=epoch)
        sw.send(port, sent)
        sw.expect(sw.world.servers[target].port, sw.steered(sent, sw.world.servers[target]))
        digest = sw.expect_digest()
        assert (digest["op"], digest["owner"], digest["target"]) == (op, source, target)
        assert digest["keyspace"] == kb.id
        assert sw.slot_read(kb, slot) == after
        assert sw.last_epoch == epoch
    # The old owner 2 can no longer start anything for this slot.
    port, sent = _transition(sw, Op.SLOT_START, kb, slot, 2, 3, epoch=3)
    sw.send(port, sent)
    sw.expect_none()
    sw.expect_no_digest()
    assert sw.slot_read(kb, slot) == (1, 0)


@dataclass(frozen=True)
class Bad:
    name: str
    migrating: bool  # initial state: stable (owner 1) or migrating 1 -> 2
    op: Op
    source: int  # nm.source_id
    target: int  # nm.target_id
    sender: str = "self"  # whose port and IP the datagram comes from: server id or "client"
    spoof_ip: int | None = None  # source IP of this server instead
    via_port_of: int | None = None  # ingress port of this server instead
    bad_slot: bool = False  # nm.slot >= SLOT_COUNT
    no_epoch: bool = False  # the datagram ends after the NetMigrate header


BAD = [
    Bad("start from the wrong port", False, Op.SLOT_START, 1, 2, via_port_of=3),
    Bad("start with a spoofed source ip", False, Op.SLOT_START, 1, 2, spoof_ip=2),
    Bad("start claiming another server's id", False, Op.SLOT_START, 2, 3, sender="1"),
    Bad("start from a server that is not the owner", False, Op.SLOT_START, 2, 3),
    Bad("start from the client", False, Op.SLOT_START, 1, 2, sender="client"),
    Bad("start to an unknown target", False, Op.SLOT_START, 1, 9),
    Bad("start to the owner itself", False, Op.SLOT_START, 1, 1),
    Bad("start to no target", False, Op.SLOT_START, 1, 0),
    Bad("start to another target while migrating", True, Op.SLOT_START, 1, 3),
    Bad("complete of a stable slot", False, Op.SLOT_COMPLETE, 1, 2),
    Bad("complete to the wrong target", True, Op.SLOT_COMPLETE, 1, 3),
    Bad("complete sent by the target", True, Op.SLOT_COMPLETE, 2, 2),
    Bad("complete sent by a third server", True, Op.SLOT_COMPLETE, 3, 2),
    Bad("complete from the wrong port", True, Op.SLOT_COMPLETE, 1, 2, via_port_of=3),
    Bad("complete with a spoofed source ip", True, Op.SLOT_COMPLETE, 1, 2, spoof_ip=3),
    Bad("complete to an unknown target", True, Op.SLOT_COMPLETE, 1, 9),
    Bad("start of a slot beyond the slot count", False, Op.SLOT_START, 1, 2, bad_slot=True),
    Bad("complete of a slot beyond the slot count", True, Op.SLOT_COMPLETE, 1, 2, bad_slot=True),
    Bad("start without its epoch", False, Op.SLOT_START, 1, 2, no_epoch=True),
    Bad("complete without its epoch", True, Op.SLOT_COMPLETE, 1, 2, no_epoch=True),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_transition_not_from_the_owner_is_dropped_and_counted(sw: Conformance, bad: Bad):
    ka, kb = sw.world.ka, sw.world.kb
    slot = sw.fresh_slot()
    initial = (0, 2) if bad.migrating else (0, 0)
    if bad.migrating:
        sw.slot_set(ka, slot, *initial)
    nm_slot = slot
    if bad.bad_slot:
        # KA's slot SLOT_COUNT + s would index KB's slot s: make that entry one that a switch
        # forgetting the bound would accept the transition for.
        nm_slot = SLOT_COUNT + slot
        sw.slot_set(kb, slot, 1, 2 if bad.migrating else 0)
    header = sw.header(bad.op, ka, nm_slot, source_id=bad.source, target_id=bad.target)
    if bad.sender == "client":
        port, sent = sw.world.client.switch_port, sw.from_client(header, ka)
        sw.touch(ka, slot)
    else:
        sender = sw.world.servers[bad.source if bad.sender == "self" else int(bad.sender)]
        port, sent = sw.from_server(
            sender,
            header,
            ka,
            ip_src=sw.world.servers[bad.spoof_ip].ip if bad.spoof_ip else None,
            port=sw.world.servers[bad.via_port_of].port if bad.via_port_of else None,
            epoch=None if bad.no_epoch else EPOCH,
        )
    with sw.counting() as delta:
        sw.send(port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_REJECTED": 1}
    sw.expect_no_digest()
    assert sw.slot_read(ka, slot) == initial
    if bad.bad_slot:
        assert sw.slot_read(kb, slot) == (1, 2 if bad.migrating else 0)


# --- Stale transitions: each drop case of the epoch check ------------------------------------


@dataclass(frozen=True)
class Stale:
    name: str
    #: The slot's entry and epoch before: via SLOT_SET (owner byte, target byte, epoch).
    initial: tuple[int, int, int]
    op: Op
    source: int
    target: int
    epoch: int


STALE = [
    Stale("start of an earlier migration of a stable slot", (0, 0, 5), Op.SLOT_START, 1, 2, 4),
    Stale("start repeating the slot's latest epoch", (0, 0, 5), Op.SLOT_START, 1, 2, 5),
    Stale("resent start of an earlier migration", (0, 2, 5), Op.SLOT_START, 1, 2, 4),
    Stale("resent start of a later epoch", (0, 2, 5), Op.SLOT_START, 1, 2, 6),
    Stale("complete of an earlier migration", (0, 2, 5), Op.SLOT_COMPLETE, 1, 2, 4),
    Stale("complete of a later epoch", (0, 2, 5), Op.SLOT_COMPLETE, 1, 2, 6),
    Stale("resent complete of an earlier migration", (2, 0, 5), Op.SLOT_COMPLETE, 1, 2, 4),
]


@pytest.mark.parametrize("stale", STALE, ids=[s.name for s in STALE])
def test_stale_transition_is_dropped_and_counted(sw: Conformance, stale: Stale):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    owner, target, epoch = stale.initial
    sw.slot_set(ka, slot, owner, target, epoch=epoch)
    port, sent = _transition(sw, stale.op, ka, slot, stale.source, stale.target, epoch=stale.epoch)
    with sw.counting() as delta:
        sw.send(port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_STALE": 1}
    sw.expect_no_digest()
    assert sw.slot_read(ka, slot) == (owner, target)
    assert sw.last_epoch == epoch


def test_replayed_transitions_of_an_earlier_migration_change_nothing(sw: Conformance):
    """A -> B (epoch 1), B -> A (2), a new A -> B (3): the first migration's START and
    COMPLETE, replayed during the third, are dropped; the third completes."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    s1, s2 = sw.world.servers[1], sw.world.servers[2]
    _, old_start = _transition(sw, Op.SLOT_START, ka, slot, 1, 2, epoch=1)
    _, old_complete = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2, epoch=1)
    steps = [
        (s1, old_start, s2),
        (s1, old_complete, s2),
        (s2, _transition(sw, Op.SLOT_START, ka, slot, 2, 1, epoch=2)[1], s1),
        (s2, _transition(sw, Op.SLOT_COMPLETE, ka, slot, 2, 1, epoch=2)[1], s1),
        (s1, _transition(sw, Op.SLOT_START, ka, slot, 1, 2, epoch=3)[1], s2),
    ]
    for sender, sent, to in steps:
        sw.send(sender.port, sent)
        sw.expect(to.port, sw.steered(sent, to))
        sw.expect_digest()
    assert sw.slot_read(ka, slot) == (1, 2)
    with sw.counting() as delta:
        sw.send(s1.port, old_start)
        sw.send(s1.port, old_complete)
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_STALE": 2}
    sw.expect_no_digest()
    assert sw.slot_read(ka, slot) == (1, 2)
    assert sw.last_epoch == 3
    port, complete = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2, epoch=3)
    sw.send(port, complete)
    sw.expect(s2.port, sw.steered(complete, s2))
    assert sw.expect_digest()["op"] == Op.SLOT_COMPLETE
    assert sw.slot_read(ka, slot) == (2, 0)


def test_an_entry_restored_without_its_epoch_takes_the_migrations(sw: Conformance):
    """After a switch restart the controller writes the entries back without epochs (0): the
    migration in flight completes with its own epoch, which the slot keeps from then on."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    s2 = sw.world.servers[2]
    sw.slot_set(ka, slot, 0, 2, epoch=0)
    port, sent = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2, epoch=9)
    with sw.counting() as delta:
        sw.send(port, sent)
        sw.expect(s2.port, sw.steered(sent, s2))
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_ACCEPTED": 1}
    sw.expect_digest()
    assert (sw.slot_read(ka, slot), sw.last_epoch) == ((2, 0), 9)
    port, old = _transition(sw, Op.SLOT_COMPLETE, ka, slot, 1, 2, epoch=8)
    with sw.counting() as delta:
        sw.send(port, old)
        sw.expect_none()
    assert sw.decisions(delta) == {"TRANSITION_STALE": 1}
