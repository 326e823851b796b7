"""Giving slots back to the source, and what a target does when its Redis lost its data.

A slot the source cannot move (a key the target refuses, a target that keeps failing, a
target whose Redis lost its data) may go back to the source only while no client write was
applied here for it: the source's frozen copy is then still the whole truth. The check and
the leaving of MIGRATING_IN happen in one step of the event loop, so no write is queued in
between; writes that were held (ids not received) or wait for a pull are answered BUSY and
never applied. A slot with writes here stays MIGRATING_IN (readable: double reads are
answered as before) and the source reports why.
"""

from __future__ import annotations

import logging

from netmigrate.agent.reserved import dirty_key, is_reserved, marker_key
from netmigrate.agent.resp import command
from netmigrate.agent.slots import OWNER_STATES, SlotState
from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.holding import HoldQueue
from netmigrate.agent.target.model import Incoming, LostSlot

log = logging.getLogger(__name__)


class Rollbacks:
    def __init__(self, ctx: TargetContext, holds: HoldQueue) -> None:
        self._ctx = ctx
        self._holds = holds

    def redis_lost(self, why: str) -> None:
        """Redis lost its data: every slot migrating in is gone with its dirty marks and
        copied keys. Each is remembered (with the writes queued for it) so that the source
        gets an explicit refusal, and a give-back only when no client write was applied."""
        ctx = self._ctx
        for slot, inc in sorted(ctx.slots.items()):
            ctx.lost[slot] = LostSlot(slot, inc.source_id, inc.writes, why)
            self._leave(inc, busy=why)
            for future in (inc.persisted, inc.completing):
                if future is not None and not future.done():
                    future.set_result(False)  # neither acknowledged nor owned
            ctx.counters["target_slots_lost"] += 1
        if ctx.lost:
            log.error("%d slots migrating in are lost with the data: %s", len(ctx.lost), why)

    def _leave(self, inc: Incoming, busy: str) -> None:
        del self._ctx.slots[inc.slot]
        self._ctx.table.set_state([inc.slot], SlotState.NOT_OWNED)
        self._holds.release(inc, busy=busy)

    async def roll_back(
        self, source: int, slots: list[int], reason: str
    ) -> tuple[list[int], list[str]]:
        """(the slots that no longer migrate in here, a reason per slot kept)."""
        ctx = self._ctx
        back: list[int] = []
        refused: list[str] = []
        leaving: list[Incoming] = []
        # One step of the event loop, no await: no write is queued between check and leave.
        for slot in slots:
            lost = ctx.lost.get(slot)
            inc = ctx.slots.get(slot)
            if lost is not None and lost.source_id == source and inc is None:
                if lost.writes:
                    refused.append(
                        f"slot {slot}: {lost.writes} client writes were applied here before "
                        f"({lost.why}); they are gone and the source's copy is older"
                    )
                    continue
                del ctx.lost[slot]
                back.append(slot)
                continue
            if inc is None:
                state = ctx.table.state(slot)
                if state in OWNER_STATES or state == SlotState.MOVED:
                    refused.append(f"slot {slot}: it is {state.name} here")
                else:
                    back.append(slot)  # never entered here (or given back already)
                continue
            if inc.source_id != source:
                refused.append(f"slot {slot}: it migrates in from server {inc.source_id}")
            elif inc.writes:
                refused.append(
                    f"slot {slot}: {inc.writes} client writes were applied here; the "
                    "source's copy is older, the slot stays here"
                )
            elif inc.completing is not None:
                refused.append(f"slot {slot}: its SLOT_COMPLETE is being applied here")
            else:
                self._leave(inc, busy=f"slot {slot} goes back to the source")
                leaving.append(inc)
                back.append(slot)
        if leaving:
            await self._drop(leaving)
            ctx.counters["target_slots_rolled_back"] += len(leaving)
            log.warning(
                "slots %s given back to server %d: %s",
                [inc.slot for inc in leaving],
                source,
                reason,
            )
        return back, refused

    async def _drop(self, incs: list[Incoming]) -> None:
        """Remove the slots' bookkeeping and copied keys (on the data connection, so any
        copy or pull restore queued before runs first; later ones find no marker and do
        nothing), then their records."""
        ctx = self._ctx
        for inc in incs:
            if inc.persisted is not None:
                await inc.persisted  # its record is written before it is removed
        commands = []
        for inc in incs:
            commands += [
                command(b"DEL", dirty_key(inc.slot), marker_key(inc.slot)),
                command(b"CLUSTER", b"COUNTKEYSINSLOT", b"%d" % inc.slot),
            ]
        replies = await ctx.redis(commands)
        for inc, count in zip(incs, replies[1::2], strict=True):
            if count:
                keys = await ctx.redis(
                    [command(b"CLUSTER", b"GETKEYSINSLOT", b"%d" % inc.slot, b"%d" % count)]
                )
                keys = [k for k in keys[0] if not is_reserved(k)]
                if keys:
                    await ctx.redis([command(b"UNLINK", *keys)])
        await ctx.store.persist(slots=dict.fromkeys(inc.slot for inc in incs))
