"""Requests steered by the slot map: owner, redirect to the target, double read."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nmconf_driver import Conformance

from netmigrate.protocol.constants import READ_OPS, SLOT_COUNT, WRITE_OPS, Flag, Op

pytestmark = pytest.mark.root

WRITES = sorted(WRITE_OPS)
READS = sorted(READ_OPS)
PAYLOAD = b"\x00\x03key\x00\x00\x00\x05value"


def test_stable_slot_goes_to_the_default_owner_with_rewrites(sw: Conformance):
    ka = sw.world.ka
    owner = sw.world.servers[ka.default_owner]
    sent = sw.from_client(sw.header(Op.GET, ka, sw.fresh_slot()), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        raw = sw.expect(owner.port, sw.steered(sent, owner))
        sw.expect_none()
    assert sw.decisions(delta) == {"TO_OWNER": 1}
    assert raw[40:42] == b"\x00\x00"  # UDP checksum zeroed


def test_default_owner_and_register_base_are_per_keyspace(sw: Conformance):
    """KB: virtual service IP, default owner 2, its slots live at SLOT_COUNT + slot."""
    ka, kb = sw.world.ka, sw.world.kb
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 3, 0)  # same slot number, other keyspace: must not leak into KB
    sent = sw.from_client(sw.header(Op.SET, kb, slot), kb, payload=PAYLOAD)
    sw.send(sw.world.client.switch_port, sent)
    sw.expect(sw.world.servers[2].port, sw.steered(sent, sw.world.servers[2]))
    sw.expect_none()
    assert sw.slot_read(kb, slot) == (0, 0)
    assert sw.slot_read(ka, slot) == (3, 0)


@pytest.mark.parametrize("op", [Op.GET, Op.SET, Op.DEL, Op.INCRBY, Op.MGET, Op.MSET])
def test_explicit_owner_takes_every_data_op(sw: Conformance, op: Op):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 3, 0)
    sent = sw.from_client(sw.header(op, ka, slot), ka, payload=PAYLOAD)
    sw.send(sw.world.client.switch_port, sent)
    sw.expect(sw.world.servers[3].port, sw.steered(sent, sw.world.servers[3]))
    sw.expect_none()


def test_client_flags_are_kept(sw: Conformance):
    ka = sw.world.ka
    owner = sw.world.servers[1]
    sent = sw.from_client(sw.header(Op.SET, ka, sw.fresh_slot(), flags=Flag.RETRY), ka)
    sw.send(sw.world.client.switch_port, sent)
    sw.expect(owner.port, sw.steered(sent, owner))
    sw.expect_none()


@pytest.mark.parametrize("op", WRITES)
def test_migrating_write_goes_to_the_target_with_to_target(sw: Conformance, op: Op):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 0, 3)  # default owner 1, migrating to 3
    sent = sw.from_client(sw.header(op, ka, slot, flags=Flag.RETRY), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(sw.world.servers[3].port, sw.steered(sent, sw.world.servers[3], Flag.TO_TARGET))
        sw.expect_none()
    assert sw.decisions(delta) == {"REDIRECTED": 1}


@pytest.mark.parametrize("op", READS)
def test_migrating_read_is_double_read_to_owner_and_target(sw: Conformance, op: Op):
    kb = sw.world.kb
    slot = sw.fresh_slot()
    sw.slot_set(kb, slot, 3, 1)  # explicit owner 3, migrating to 1
    sent = sw.from_client(sw.header(op, kb, slot), kb, payload=PAYLOAD)
    owner, target = sw.world.servers[3], sw.world.servers[1]
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(owner.port, sw.steered(sent, owner, Flag.DOUBLE_READ))
        sw.expect(target.port, sw.steered(sent, target, Flag.DOUBLE_READ | Flag.TO_TARGET))
        sw.expect_none()
    # One decision per packet: the clone is not counted again.
    assert sw.decisions(delta) == {"DOUBLE_READ": 1}


def test_double_read_keeps_request_flags(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 0, 2)
    sent = sw.from_client(sw.header(Op.GET, ka, slot, flags=Flag.RETRY), ka, payload=PAYLOAD)
    owner, target = sw.world.servers[1], sw.world.servers[2]
    sw.send(sw.world.client.switch_port, sent)
    sw.expect(owner.port, sw.steered(sent, owner, Flag.DOUBLE_READ))
    sw.expect(target.port, sw.steered(sent, target, Flag.DOUBLE_READ | Flag.TO_TARGET))
    sw.expect_none()


def test_slot_out_of_range_goes_to_the_default_owner(sw: Conformance):
    kb = sw.world.kb
    owner = sw.world.servers[kb.default_owner]
    sent = sw.from_client(sw.header(Op.GET, kb, SLOT_COUNT + 5), kb, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(owner.port, sw.steered(sent, owner))
        sw.expect_none()
    assert sw.decisions(delta) == {"BAD_SLOT": 1}


def test_unknown_destination_server_is_dropped(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 7, 0)  # owner 7: no server_port entry
    sent = sw.from_client(sw.header(Op.SET, ka, slot), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"NO_SERVER": 1}


def test_requests_keep_their_order_per_egress_port(sw: Conformance):
    ka = sw.world.ka
    owner = sw.world.servers[1]
    sent = [
        sw.from_client(sw.header(Op.SET, ka, sw.fresh_slot()), ka, payload=bytes([i]) * 8)
        for i in range(20)
    ]
    for spec in sent:
        sw.send(sw.world.client.switch_port, spec)
    for spec in sent:
        # dp_poll takes the oldest frame first: a reordering makes a match skip frames.
        sw.expect(owner.port, sw.steered(spec, owner))
    sw.expect_none()


@pytest.mark.parametrize("migrating", [False, True], ids=["stable", "migrating"])
def test_switch_flags_set_by_a_client_are_cleared(sw: Conformance, migrating: bool):
    """DOUBLE_READ and TO_TARGET are the switch's word: a client cannot forge them."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    if migrating:
        sw.slot_set(ka, slot, 0, 2)
    forged = Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY
    sent = sw.from_client(sw.header(Op.GET, ka, slot, flags=forged), ka, payload=PAYLOAD)
    clean = replace(sent, header=replace(sent.header, flags=Flag.RETRY))
    owner, target = sw.world.servers[1], sw.world.servers[2]
    sw.send(sw.world.client.switch_port, sent)
    if migrating:
        sw.expect(owner.port, sw.steered(clean, owner, Flag.DOUBLE_READ))
        sw.expect(target.port, sw.steered(clean, target, Flag.DOUBLE_READ | Flag.TO_TARGET))
    else:
        sw.expect(owner.port, sw.steered(clean, owner))
    sw.expect_none()


def test_double_read_with_an_unknown_owner_is_dropped_without_clone(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 7, 2)  # owner 7 has no server_port entry
    sent = sw.from_client(sw.header(Op.GET, ka, slot), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"NO_SERVER": 1}


def test_migration_target_without_clone_session(sw: Conformance):
    """Target 9 is unknown: reads reach the owner only (no clone), writes are dropped."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 0, 9)
    owner = sw.world.servers[1]
    read = sw.from_client(sw.header(Op.MGET, ka, slot), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, read)
        sw.expect(owner.port, sw.steered(read, owner, Flag.DOUBLE_READ))
        sw.expect_none()
    assert sw.decisions(delta) == {"DOUBLE_READ": 1}
    write = sw.from_client(sw.header(Op.SET, ka, slot), ka, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, write)
        sw.expect_none()
    assert sw.decisions(delta) == {"NO_SERVER": 1}


def test_register_end_bounds_a_misconfigured_keyspace(sw: Conformance):
    """KC's base is SLOT_MAP_SIZE - 10: slot 9 is the register's last entry, slot 10 is bad."""
    kc = sw.world.kc
    sw.slot_set(kc, 9, 1, 0)
    inside = sw.from_client(sw.header(Op.GET, kc, 9), kc, payload=PAYLOAD)
    beyond = sw.from_client(sw.header(Op.GET, kc, 10), kc, payload=PAYLOAD)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, inside)
        sw.expect(sw.world.servers[1].port, sw.steered(inside, sw.world.servers[1]))
        sw.send(sw.world.client.switch_port, beyond)
        sw.expect(sw.world.servers[3].port, sw.steered(beyond, sw.world.servers[3]))
        sw.expect_none()
    assert sw.decisions(delta) == {"TO_OWNER": 1, "BAD_SLOT": 1}
