"""The slot map read as register cells comes in several small Read RPCs, not one: a target
that builds a Read's answer in one step (the lab switch, in the loop that forwards packets)
stops forwarding for as long as that takes (issue #14: ~120 ms for the 8,192 slots a finalize
verifies, a gap in every client's operations). Answered here by the lab switch's own read
code over its real state; only the RPC transport is left out."""

from __future__ import annotations

import asyncio

from finsy.p4schema import P4Schema
from finsy.proto import p4r

from netmigrate.p4rt import read_slot_map_register
from netmigrate.p4rt.slotmap import REGISTER_READ_SLOTS
from netmigrate.resources import p4info_path
from netmigrate.switch.entities import read_entity
from netmigrate.switch.p4info import P4InfoIndex, load_p4info
from netmigrate.switch.state import SwitchState


class Session:
    def __init__(self) -> None:
        info = load_p4info(p4info_path())
        self.schema = P4Schema(info)
        self.state = SwitchState(P4InfoIndex(info), 255)
        self.reads: list[list[tuple[int, int]]] = []

    async def read(self, requests: list[p4r.Entity]) -> list[p4r.Entity]:
        self.reads.append(
            [(e.register_entry.register_id, e.register_entry.index.index) for e in requests]
        )
        return [found for e in requests for found in read_entity(self.state, e)]


def test_the_slot_map_register_is_read_in_rpcs_of_a_bounded_size() -> None:
    session = Session()
    slot_map = session.schema.registers["slot_map"].id
    epoch = session.schema.registers["slot_epoch"].id
    base = 16384
    for s in range(3000):
        session.state.registers[slot_map][base + s] = (2 << 8) | (s % 3)
        session.state.registers[epoch][base + s] = s
    slots = list(range(3000))
    got = asyncio.run(read_slot_map_register(session, base, slots, epochs=True))  # type: ignore[arg-type]
    assert {s: (e.owner, e.target, e.epoch) for s, e in got.items()} == {
        s: (2, s % 3, s) for s in slots
    }
    assert len(session.reads) == -(-3000 // REGISTER_READ_SLOTS)
    for rpc in session.reads:
        # Each slot's map and epoch cells are read in the same RPC.
        by_register = {rid: sorted(i for r, i in rpc if r == rid) for rid in (slot_map, epoch)}
        assert by_register[slot_map] == by_register[epoch]
        assert len(by_register[slot_map]) <= REGISTER_READ_SLOTS
