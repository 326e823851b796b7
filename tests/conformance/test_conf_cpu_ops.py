"""SLOT_SET / SLOT_READ: the controller's path to slot_map, only from the CPU port."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nmconf_driver import Conformance

from netmigrate.protocol.constants import SLOT_COUNT, Op

pytestmark = pytest.mark.root


@pytest.mark.parametrize(("owner", "target"), [(0, 0), (1, 0), (0, 2), (3, 1), (254, 254)])
def test_slot_set_writes_and_slot_read_reads_back(sw: Conformance, owner: int, target: int):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    with sw.counting() as delta:
        assert sw.slot_set(ka, slot, owner, target) == (owner, target)
        assert sw.slot_read(ka, slot) == (owner, target)
    assert sw.decisions(delta) == {"CPU_OP": 2}
    sw.expect_none()


def test_slot_set_touches_one_entry_only(sw: Conformance):
    ka, kb = sw.world.ka, sw.world.kb
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 2, 3)
    assert sw.slot_read(ka, slot - 1) == (0, 0)
    assert sw.slot_read(ka, slot + 1) == (0, 0)
    assert sw.slot_read(kb, slot) == (0, 0)


def test_last_slot_of_a_keyspace_is_addressable(sw: Conformance):
    ka, kb = sw.world.ka, sw.world.kb
    last = SLOT_COUNT - 1
    sw.slot_set(ka, last, 3, 0)
    assert sw.slot_read(ka, last) == (3, 0)
    assert sw.slot_read(kb, 0) == (0, 0)


def test_slot_ops_beyond_the_slot_count_are_dropped(sw: Conformance):
    """slot >= SLOT_COUNT must not reach into the next keyspace's part of the register."""
    ka, kb = sw.world.ka, sw.world.kb
    slot = sw.fresh_slot()
    for op, ids in ((Op.SLOT_SET, {"source_id": 3, "target_id": 1}), (Op.SLOT_READ, {})):
        header = sw.header(op, ka, SLOT_COUNT + slot, **ids)
        with sw.counting() as delta:
            sw.p4rt.packet_out(bytes(sw.cpu_frame(ka, header).build()))
            sw.expect_none()
        assert sw.decisions(delta) == {"BAD_SLOT": 1}, op.name
    assert sw.slot_read(kb, slot) == (0, 0)


@pytest.mark.parametrize("op", [Op.SLOT_SET, Op.SLOT_READ])
@pytest.mark.parametrize("from_host", ["client", "server 1"])
def test_cpu_ops_from_a_data_port_are_dropped(sw: Conformance, op: Op, from_host: str):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    host = sw.world.client if from_host == "client" else sw.world.servers[1].host
    header = sw.header(op, ka, slot, source_id=3, target_id=2)
    sent = replace(sw.cpu_frame(ka, header), eth_src=host.mac, ip_src=host.ip)
    with sw.counting() as delta:
        sw.send(host.switch_port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"CPU_OP_REJECTED": 1}
    assert sw.slot_read(ka, slot) == (0, 0)


def test_slot_set_from_cpu_changes_where_requests_go(sw: Conformance):
    kb = sw.world.kb
    slot = sw.fresh_slot()
    req = sw.from_client(sw.header(Op.DEL, kb, slot), kb, payload=b"\x00\x01k")
    for owner in (3, 1, 0):
        sw.slot_set(kb, slot, owner, 0)
        dest = sw.world.servers[owner or kb.default_owner]
        sw.send(sw.world.client.switch_port, req)
        sw.expect(dest.port, sw.steered(req, dest))
    sw.expect_none()


def test_slot_set_raises_the_epoch_and_never_lowers_it(sw: Conformance):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    assert sw.epoch_read(ka, slot) == 0
    sw.slot_set(ka, slot, 2, 0, epoch=7)
    assert sw.last_epoch == 7
    sw.slot_set(ka, slot, 3, 0, epoch=4)  # the entry is written, the epoch stays
    assert sw.last_epoch == 7
    assert (sw.slot_read(ka, slot), sw.last_epoch) == ((3, 0), 7)


@pytest.mark.parametrize("op", [Op.SLOT_SET, Op.SLOT_READ])
def test_cpu_ops_without_their_epoch_are_dropped(sw: Conformance, op: Op):
    ka = sw.world.ka
    slot = sw.fresh_slot()
    header = sw.header(op, ka, slot, source_id=3, target_id=2)
    with sw.counting() as delta:
        sw.p4rt.packet_out(bytes(sw.cpu_frame(ka, header, epoch=None).build()), submit=True)
        sw.expect_none()
    assert sw.decisions(delta) == {"CPU_OP_REJECTED": 1}
    assert sw.slot_read(ka, slot) == (0, 0)
