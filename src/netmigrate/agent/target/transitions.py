"""SLOT_START and SLOT_COMPLETE at the target, in arrival order with the client requests: a
START enters MIGRATING_IN at once and is acknowledged once that is persisted; a COMPLETE makes
the slot OWNED here and drops its bookkeeping. The STARTs (COMPLETEs) of a wave arrive back to
back and are persisted together.

Each carries its migration's epoch. A transition of an earlier migration of the slot (a new
START whose epoch is not above every one this agent saw for the slot, a resent START or a
COMPLETE whose epoch is not the migration's) is dropped without an answer and counted, as the
switch does: it must neither open bookkeeping nor hand the slot over."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from netmigrate.agent.migration_store import SlotRecord
from netmigrate.agent.reserved import dirty_key, is_reserved, marker_key
from netmigrate.agent.resp import collect_replies, command
from netmigrate.agent.slots import SlotState
from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.holding import HoldQueue
from netmigrate.agent.target.model import Incoming, log_slots
from netmigrate.protocol.codec import Control, HeaderFields, encode_reply
from netmigrate.protocol.constants import F_OP, F_SLOT, F_SOURCE_ID, F_TARGET_ID, Op, Status

log = logging.getLogger(__name__)


class TargetTransitions:
    def __init__(self, ctx: TargetContext, holds: HoldQueue) -> None:
        self._ctx = ctx
        self._holds = holds
        #: Slots whose START arrived and whose entry is not persisted yet: persisted together
        #: (a wave of STARTs arrives back to back).
        self._starting: list[Incoming] = []
        self._starter: asyncio.Task[None] | None = None
        #: Likewise for COMPLETEs.
        self._completing: list[Incoming] = []
        self._completer: asyncio.Task[None] | None = None

    def on_transition(self, fields: HeaderFields, epoch: int, addr: Any) -> None:
        """A SLOT_START or SLOT_COMPLETE request, in arrival order with client requests."""
        slot, source, target = fields[F_SLOT], fields[F_SOURCE_ID], fields[F_TARGET_ID]
        name = Op(fields[F_OP]).name
        if target != self._ctx.server_id:
            message = f"{name} names target {target}, this is server {self._ctx.server_id}"
            self._ctx.dp.refuse(fields, addr, int(Status.BAD_REQUEST), message)
            return
        if source in (0, self._ctx.server_id):
            self._ctx.dp.refuse(
                fields, addr, int(Status.BAD_REQUEST), f"{name} from server {source}"
            )
            return
        if fields[F_OP] == Op.SLOT_START:
            self._on_start(fields, addr, slot, source, epoch)
        else:
            self._on_complete(fields, addr, slot, source, epoch)

    def _stale(self, fields: HeaderFields, epoch: int, current: int) -> None:
        self._ctx.counters["target_stale_transitions"] += 1
        log.warning(
            "slot %d: dropped a stale %s from server %d (epoch %d, the slot's is %d)",
            fields[F_SLOT],
            Op(fields[F_OP]).name,
            fields[F_SOURCE_ID],
            epoch,
            current,
        )

    def _ack(self, fields: HeaderFields, epoch: int, addr: Any) -> None:
        """OK, echoing the epoch: the source takes only its own migration's answer."""
        self._ctx.dp.send_to(encode_reply(fields, int(Status.OK), Control(epoch)), addr)

    def _ack_when(
        self, future: asyncio.Future[bool], fields: HeaderFields, epoch: int, addr: Any
    ) -> None:
        def done(f: asyncio.Future[bool]) -> None:
            if f.cancelled() or f.exception() is not None or not f.result():
                return  # not persisted: the source resends
            self._ack(fields, epoch, addr)

        if future.done():
            done(future)
        else:
            future.add_done_callback(done)

    def _refuse_lost(self, fields: HeaderFields, addr: Any, slot: int, source: int) -> bool:
        """The migration of this slot lost its state here: it fails explicitly, naming the
        loss (the source gives the slot back or reports why not); it neither starts over nor
        completes."""
        lost = self._ctx.lost.get(slot)
        if lost is None or lost.source_id != source:
            return False
        self._ctx.dp.refuse(fields, addr, int(Status.ERROR), f"slot {slot}: {lost.why}")
        return True

    def _on_start(
        self, fields: HeaderFields, addr: Any, slot: int, source: int, epoch: int
    ) -> None:
        # Before the epoch check: the lost migration's own resent START carries an epoch this
        # agent knows already once it persisted the START, so the check would drop it and the
        # source would learn of the loss only when its resends run out. An earlier
        # migration's START refused here instead of dropped is harmless: a refusal is never an
        # acknowledgement (the source takes only OK with its own epoch), nothing changes here,
        # and while the loss stands every START of the slot from that source, the current
        # one's included, gets this same refusal.
        if self._refuse_lost(fields, addr, slot, source):
            return
        state = self._ctx.table.state(slot)
        inc = self._ctx.slots.get(slot)
        if state == SlotState.MIGRATING_IN and inc is not None:
            if inc.source_id != source:
                message = f"slot {slot} migrates in from server {inc.source_id}, not {source}"
                self._ctx.dp.refuse(fields, addr, int(Status.ERROR), message)
                return
            if epoch != inc.epoch:
                self._stale(fields, epoch, inc.epoch)
                return
            assert inc.persisted is not None
            self._ack_when(inc.persisted, fields, epoch, addr)
            return
        known = self._ctx.store.epoch(slot)
        if state == SlotState.NOT_OWNED and epoch <= known:
            self._stale(fields, epoch, known)
            return
        if state != SlotState.NOT_OWNED:
            why = {
                SlotState.MOVED: "it moved away from here and is not finalized yet",
            }.get(state, f"it is {state.name} here")
            self._ctx.dp.refuse(
                fields, addr, int(Status.ERROR), f"slot {slot} cannot migrate in: {why}"
            )
            return
        # Enter MIGRATING_IN now, in arrival order: every client request for the slot that
        # comes after the START is held until the source's request ids arrive, which is
        # after the acknowledgement, which is after the state is persisted.
        inc = Incoming(slot, source, time.time(), epoch=epoch)
        self._ctx.slots[slot] = inc
        self._ctx.table.set_state([slot], SlotState.MIGRATING_IN)
        inc.persisted = asyncio.get_running_loop().create_future()
        self._starting.append(inc)
        if self._starter is None or self._starter.done():
            # Runs after this batch of datagrams: the STARTs of a wave are entered together.
            self._starter = self._ctx.spawn(self._persist_starts())
        self._ack_when(inc.persisted, fields, epoch, addr)

    async def _persist_starts(self) -> None:
        """Persist the slots that entered MIGRATING_IN, a group at a time; each one's
        ``persisted`` says whether it may be acknowledged."""
        batch: list[Incoming] = []
        try:
            while self._starting:
                batch, self._starting = self._starting, []
                try:
                    await self._enter(batch)
                except Exception as e:
                    log.error(
                        "slots %s: cannot persist MIGRATING_IN: %s", [i.slot for i in batch], e
                    )
                    for inc in batch:
                        if self._ctx.slots.get(inc.slot) is inc:
                            del self._ctx.slots[inc.slot]
                            self._ctx.table.set_state([inc.slot], SlotState.NOT_OWNED)
                            self._holds.release(
                                inc, busy="the target could not persist the migration"
                            )
                        inc.persisted.set_result(False)  # type: ignore[union-attr]
                    continue
                log_slots("migrate in from", batch)
                for inc in batch:
                    inc.persisted.set_result(True)  # type: ignore[union-attr]
        except asyncio.CancelledError:  # stopping: nothing will acknowledge these
            for inc in batch + self._starting:
                if inc.persisted is not None and not inc.persisted.done():
                    inc.persisted.cancel()
            raise

    async def _enter(self, batch: list[Incoming]) -> None:
        """Persist the slots' records (one write), then reset their bookkeeping keys (one
        round trip on the data connection)."""
        await self._ctx.store.persist(
            slots={
                inc.slot: SlotRecord(
                    inc.slot, "in", inc.source_id, "migrating", "", inc.started, epoch=inc.epoch
                )
                for inc in batch
            }
        )
        commands = []
        for inc in batch:
            slot = inc.slot
            commands += [
                command(b"DEL", dirty_key(slot)),
                command(b"SET", marker_key(slot), b"%d" % inc.source_id),
                command(b"CLUSTER", b"COUNTKEYSINSLOT", b"%d" % slot),
            ]
        replies = await self._ctx.redis(commands)
        for inc, stray in zip(batch, replies[2::3], strict=True):
            # This agent does not own the slot, so keys in it are leftovers (nobody serves
            # them); they must not survive next to the copied ones. The marker is counted.
            if stray > 1:
                slot = inc.slot
                keys = await self._ctx.admin.execute_command(
                    "CLUSTER", "GETKEYSINSLOT", slot, stray
                )
                keys = [k for k in keys if not is_reserved(k)]
                if keys:
                    log.warning(
                        "slot %d: deleting %d stray keys before migrating in", slot, len(keys)
                    )
                    await self._ctx.admin.unlink(*keys)

    def _on_complete(
        self, fields: HeaderFields, addr: Any, slot: int, source: int, epoch: int
    ) -> None:
        if self._refuse_lost(fields, addr, slot, source):
            return
        state = self._ctx.table.state(slot)
        inc = self._ctx.slots.get(slot)
        if state == SlotState.OWNED and inc is None:
            known = self._ctx.store.epoch(slot)
            if epoch != known:
                self._stale(fields, epoch, known)
                return
            # A resent COMPLETE (the acknowledgement got lost): nothing to do but confirm.
            self._ack(fields, epoch, addr)
            return
        if state != SlotState.MIGRATING_IN or inc is None or inc.source_id != source:
            message = f"slot {slot} does not migrate in from server {source} ({state.name} here)"
            self._ctx.dp.refuse(fields, addr, int(Status.ERROR), message)
            return
        if epoch != inc.epoch:
            self._stale(fields, epoch, inc.epoch)
            return
        if inc.completing is None:
            inc.completing = asyncio.get_running_loop().create_future()
            self._completing.append(inc)
            if self._completer is None or self._completer.done():
                self._completer = self._ctx.spawn(self._complete_all())
        self._ack_when(inc.completing, fields, epoch, addr)

    async def _complete_all(self) -> None:
        """Complete the slots whose COMPLETE arrived, a group at a time."""
        batch: list[Incoming] = []
        try:
            while self._completing:
                batch, self._completing = self._completing, []
                await self._complete(batch)
        except asyncio.CancelledError:  # stopping: nothing will acknowledge these
            for inc in batch + self._completing:
                if inc.completing is not None and not inc.completing.done():
                    inc.completing.cancel()
            raise

    async def _complete(self, batch: list[Incoming]) -> None:
        """OWNED for every slot of ``batch`` (one persisted change), then their bookkeeping
        keys deleted and their records dropped; each slot's ``completing`` says whether it
        may be acknowledged."""

        def finish(inc: Incoming, owned: bool) -> None:
            future = inc.completing
            if not owned:
                inc.completing = None  # a resent COMPLETE tries again
            if future is not None and not future.done():
                future.set_result(owned)

        ready: list[Incoming] = []
        for inc in batch:
            assert inc.persisted is not None
            if await inc.persisted and self._ctx.still_in(inc):
                ready.append(inc)
            else:
                finish(inc, False)
        if not ready:
            return
        slots = [inc.slot for inc in ready]
        now = time.time()
        records: dict[int, SlotRecord | None] = {
            inc.slot: SlotRecord(
                inc.slot, "in", inc.source_id, "cleanup", "", inc.started, 0, now, epoch=inc.epoch
            )
            for inc in ready
        }
        cleaned: list[asyncio.Future[list[Any]]] = []
        try:
            await self._ctx.store.persist(
                slots=records,
                owned=dict.fromkeys(slots, True),
                then=lambda: cleaned.append(self._become_owner(ready)),
            )
            replies = await cleaned[0]
            failed = [s for s, r in zip(slots, replies, strict=True) if isinstance(r, Exception)]
            for slot in failed:  # the data connection dropped: nothing queued before can run
                await self._ctx.admin.delete(dirty_key(slot), marker_key(slot))
            await self._ctx.store.persist(slots=dict.fromkeys(slots))
        except Exception as e:
            log.error("slots %s: completing the migration failed: %s", slots, e)
            for inc in ready:
                finish(inc, self._ctx.table.state(inc.slot) == SlotState.OWNED)
            return
        log_slots("are owned here now, from", ready)
        for inc in ready:
            finish(inc, True)

    def _become_owner(self, incs: list[Incoming]) -> asyncio.Future[list[Any]]:
        """OWNED, in one step of the event loop: requests from now on are plain requests.
        Returns the future of the bookkeeping keys' deletion (a reply per slot).

        The bookkeeping keys are deleted through the data-path connection, so any pull's
        restore queued before (a request that saw MIGRATING_IN) runs before they go.
        """
        self._ctx.table.set_state([inc.slot for inc in incs], SlotState.OWNED)
        commands = []
        for inc in incs:
            del self._ctx.slots[inc.slot]
            commands.append(command(b"DEL", dirty_key(inc.slot), marker_key(inc.slot)))
        callbacks, cleaned = collect_replies(len(commands))
        self._ctx.dp.flush(commands, callbacks)
        for inc in incs:
            self._holds.release(inc)
        return cleaned
