"""Running a migration: its slots move in **waves** (up to ``parallel_slots`` slots and
WAVE_KEYS keys), each step once for the whole wave (one persisted change, the STARTs back to
back, one id transfer, one copy stream), so the per-slot cost is a fraction of a round trip.
A slot that fails in a wave, or was in flight when the migration (re)started, goes on alone
from its persisted phase: every step is idempotent.

Per slot: persist "starting" (MIGRATING_OUT) -> SLOT_START -> the freeze -> persist "copying"
-> the request ids -> the copy -> persist "completing" -> SLOT_COMPLETE -> persist "done"
(MOVED: the keys stay until finalize).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from netmigrate.agent.lost import is_data_loss
from netmigrate.agent.migration_store import MigrationRecord, SlotRecord
from netmigrate.agent.resp import command as resp_command
from netmigrate.agent.slots import SlotState
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.copy import Copier
from netmigrate.agent.source.handover import IdHandover
from netmigrate.agent.source.model import (
    FINISHED_PHASES,
    Migration,
    SlotRun,
    StepFailed,
    describe,
)
from netmigrate.agent.source.prepare import Planner
from netmigrate.agent.source.rate import RateLimiter
from netmigrate.agent.source.rollback import Rollback
from netmigrate.agent.source.transitions import Transitions
from netmigrate.protocol.constants import Op

log = logging.getLogger(__name__)

#: Keys a wave of slots may hold (counted before the freeze): the freeze of a slot lasts
#: until its whole wave is copied, so waves stay small; a slot with more keys goes alone.
WAVE_KEYS = 4096
#: Slots whose keys are counted per round trip when forming waves.
_COUNT_CHUNK = 1024


class Runner:
    def __init__(
        self,
        ctx: SourceContext,
        *,
        planner: Planner,
        transitions: Transitions,
        handover: IdHandover,
        copier: Copier,
        rollback: Rollback,
    ) -> None:
        self._ctx = ctx
        self._rollback = rollback
        self._planner = planner
        self._transitions = transitions
        self._handover = handover
        self._copier = copier

    def launch(self, m: Migration) -> None:
        m.limiter = RateLimiter(m.record.rate_keys_per_second)
        m.task = asyncio.create_task(self._run(m), name=f"migration-{m.record.migration_id}")

    async def _run(self, m: Migration) -> None:
        rec = m.record
        todo = [s for s, run in sorted(m.slots.items()) if run.phase not in FINISHED_PHASES]
        # Slots in flight (after a restart, a failure or an abort) continue one at a time
        # from their persisted phase; the others move in waves, hottest first (D36): the
        # load leaves the saturated source with the first waves, not linearly with the slots.
        in_flight = [s for s in todo if s in self._ctx.slots.records]
        fresh = self._ctx.heat.hottest_first(s for s in todo if s not in self._ctx.slots.records)
        permits = asyncio.Semaphore(rec.parallel_slots)
        tasks: list[asyncio.Task[None]] = []

        def launch(coro: Any, slots: int) -> None:
            def release(_: asyncio.Task[None]) -> None:
                for _ in range(slots):
                    permits.release()

            task = asyncio.create_task(coro)
            task.add_done_callback(release)
            tasks.append(task)

        try:
            # In steps: one pass over the whole window would stop serving for its duration.
            await self._ctx.dedup.watch_gradually(todo)
            for slot in in_flight:
                await permits.acquire()
                launch(self._slot(m, slot), 1)
            for i in range(0, len(fresh), _COUNT_CHUNK):
                if m.abort:
                    break
                chunk = fresh[i : i + _COUNT_CHUNK]
                counts = await self._counts(chunk)
                keys_of = dict(zip(chunk, counts, strict=True))
                for wave in form_waves(chunk, counts, rec.parallel_slots):
                    for _ in wave:
                        await permits.acquire()
                    if m.abort:  # a wave already started finishes; no new one starts
                        for _ in wave:
                            permits.release()
                        break
                    estimate = sum(min(keys_of[s], WAVE_KEYS) for s in wave)
                    launch(self._wave(m, wave, estimate), len(wave))
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            raise
        finally:
            self._ctx.dedup.unwatch(todo)
        phases = [run.phase for run in m.slots.values()]
        if "failed" in phases or "rolled_back" in phases:
            rec.state = "FAILED"
            rec.error = "; ".join(m.failures[-3:])
        elif all(p in FINISHED_PHASES for p in phases):
            rec.state = "DONE"
        else:
            rec.state = "ABORTED"
        rec.finished = time.time()
        await self._ctx.store.persist(migration=rec)
        log.info("migration %s: %s", rec.migration_id, rec.state)

    async def _counts(self, slots: list[int]) -> list[int]:
        """Keys per slot now (before the freeze: an estimate to size the waves by)."""
        try:
            replies = await self._ctx.keys.calls(
                [resp_command(b"CLUSTER", b"COUNTKEYSINSLOT", s) for s in slots]
            )
        except (StepFailed, OSError) as e:
            log.warning("counting keys failed (%s): every slot goes alone", e)
            return [WAVE_KEYS] * len(slots)
        return [int(n) for n in replies]

    async def _wave(self, m: Migration, slots: list[int], estimate: int = 0) -> None:
        """Move several slots together, each step once for all of them: one persisted change
        per phase, the STARTs and COMPLETEs back to back, one request-id transfer, one copy
        stream. A slot whose step fails leaves the wave at once and goes on alone (``_slot``)
        from its persisted phase, as does the rest of the wave when a shared step fails:
        every step is idempotent."""
        mrec = m.record
        alone: list[asyncio.Task[None]] = []

        def leave(live: list[int], failed: dict[int, str]) -> list[int]:
            """The slots that stay in the wave; the failed ones go on alone right away (a
            slot the target entered holds its clients' writes until the ids arrive)."""
            if not failed:
                return live
            log.warning(
                "%d slots of the wave %d..%d go on alone: %s",
                len(failed),
                slots[0],
                slots[-1],
                next(iter(failed.values())),
            )
            for s, why in sorted(failed.items()):
                m.slots[s].attempts += 1
                m.slots[s].error = why
                alone.append(asyncio.create_task(self._slot(m, s)))
            return [s for s in live if s not in failed]

        live = list(slots)
        try:
            assert m.limiter is not None
            # Paid up front (one token per slot, one per key counted before the freeze, up to
            # one second's worth): the wave then runs unthrottled, so its slots stay frozen
            # briefly; only keys beyond what was paid wait inside the copy.
            rate = m.limiter.rate
            upfront = len(slots) + estimate
            if rate > 0:
                upfront = min(upfront, rate)
            await m.limiter.take(upfront)
            key_tokens = max(upfront - len(slots), 0)
            now = time.time()
            for s in live:
                m.slots[s].phase, m.slots[s].started, m.slots[s].error = "starting", now, ""
            await self._ctx.slots.save_many(
                [self._starting(mrec, s, now) for s in live], SlotState.MIGRATING_OUT
            )
            live = leave(live, await self._transitions.send(mrec, live, Op.SLOT_START))
            frozen = await asyncio.gather(*(self._ctx.slots.frozen(s) for s in live))
            lost = "the Redis connection dropped at the freeze"
            live = leave(live, {s: lost for s, ok in zip(live, frozen, strict=True) if not ok})
            now = time.time()
            await self._ctx.slots.save_many(
                [self._ctx.slots.records[s].evolve(phase="copying", frozen=now) for s in live]
            )
            for s in live:
                m.slots[s].phase, m.slots[s].frozen = "copying", now
            await self._handover.send(mrec, live)
            await self._copier.copy(m, live, prepaid=key_tokens)
            await self._ctx.slots.save_many(
                [
                    self._ctx.slots.records[s].evolve(
                        phase="completing",
                        keys_copied=m.slots[s].keys_copied,
                        keys_total=m.slots[s].keys_total,
                        attempts=m.slots[s].attempts,
                    )
                    for s in live
                ]
            )
            for s in live:
                m.slots[s].phase = "completing"
            live = leave(live, await self._transitions.send(mrec, live, Op.SLOT_COMPLETE))
            now = time.time()
            await self._ctx.slots.moved(
                [self._ctx.slots.records[s].evolve(phase="done", finished=now) for s in live]
            )
            for s in live:
                m.slots[s].phase, m.slots[s].finished = "done", now
        except asyncio.CancelledError:
            for t in alone:
                t.cancel()
            raise
        except Exception as e:
            if not isinstance(e, StepFailed | grpc.aio.AioRpcError | ConnectionError):
                log.exception("wave of slots %d..%d: unexpected error", slots[0], slots[-1])
            leave(live, dict.fromkeys(live, describe(e)))
        try:
            await asyncio.gather(*alone)
        except asyncio.CancelledError:
            for t in alone:
                t.cancel()
            raise

    def _starting(self, mrec: MigrationRecord, slot: int, now: float) -> SlotRecord:
        """The record of a slot about to start moving: persisted before its START, with the
        epoch that START and COMPLETE will carry (a resumed slot keeps its record's)."""
        epoch = self._ctx.store.next_epoch(slot)
        return SlotRecord(
            slot, "out", mrec.target_id, "starting", mrec.migration_id, now, epoch=epoch
        )

    async def _slot(self, m: Migration, slot: int) -> None:
        run = m.slots[slot]
        first_failure = 0.0
        delay = 0.05
        run.error = ""
        while True:
            try:
                await self._slot_steps(m, slot, run)
                run.error = ""
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every step is idempotent: go again from the persisted phase
                if not isinstance(e, StepFailed | grpc.aio.AioRpcError | ConnectionError):
                    log.exception("slot %d: unexpected error", slot)
                run.attempts += 1
                run.error = describe(e)
                now = time.monotonic()
                first_failure = first_failure or now
                # The target's Redis lost the slot's state: retrying cannot bring it back.
                final = is_data_loss(run.error)
                if final or now - first_failure > self._ctx.slot_retry_seconds:
                    await self._give_up(m, slot, run, final)
                    return
                log.warning("slot %d: %s; retrying", slot, run.error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _give_up(self, m: Migration, slot: int, run: SlotRun, final: bool) -> None:
        """The slot cannot move: back to this agent if the target holds no client write
        for it (#12.6), else it stays in flight (frozen here, readable) and says why."""
        if final:
            m.abort = True  # the target lost its data: no further wave goes there
        kept = await self._rollback.give_back(m, [slot], run.error)
        if slot in kept:
            log.error("slot %d: giving up: %s; not rolled back: %s", slot, run.error, kept[slot])
            run.phase = "failed"
            m.failures.append(f"slot {slot}: {run.error}; not rolled back: {kept[slot]}")
        else:
            log.error("slot %d: giving up: %s; rolled back to the source", slot, run.error)
            m.failures.append(f"slot {slot}: {run.error}; rolled back to the source")

    async def _slot_steps(self, m: Migration, slot: int, run: SlotRun) -> None:
        mrec = m.record
        rec = self._ctx.slots.records.get(slot)
        if rec is None:
            rec = self._starting(mrec, slot, time.time())
            await self._ctx.slots.save(rec, state=SlotState.MIGRATING_OUT)
        run.started = rec.started
        if rec.phase in ("starting", "copying"):
            run.phase = "starting"
            await self._transitions.send_one(mrec, slot, Op.SLOT_START)
            if not await self._ctx.slots.frozen(slot):
                raise StepFailed("the Redis connection dropped at the freeze; starting again")
            if rec.phase == "starting":
                rec = await self._ctx.slots.save(rec.evolve(phase="copying", frozen=time.time()))
            run.phase, run.frozen = "copying", rec.frozen
            await self._handover.send_one(mrec, slot)
            await self._copier.copy(m, [slot], one_slot=True)
            rec = await self._ctx.slots.save(
                rec.evolve(
                    phase="completing",
                    keys_copied=run.keys_copied,
                    keys_total=run.keys_total,
                    attempts=run.attempts,
                )
            )
        if rec.phase == "completing":
            run.phase = "completing"
            try:
                await self._transitions.send_one(mrec, slot, Op.SLOT_COMPLETE)
            except StepFailed:
                # The switch may have flipped the slot and lost only the acknowledgement
                # path; the target itself knows whether it owns the slot now.
                if not await self._planner.target_owns(mrec, slot):
                    raise
            rec = rec.evolve(phase="done", finished=time.time())
            await self._ctx.slots.moved([rec])
            run.phase, run.finished = "done", rec.finished


def form_waves(slots: list[int], counts: list[int], limit: int) -> list[list[int]]:
    """Slots grouped, in the order given (hottest first), into waves of at most ``limit``
    slots and WAVE_KEYS keys (a slot with more keys goes alone)."""
    waves: list[list[int]] = []
    wave: list[int] = []
    keys = 0
    for slot, n in zip(slots, counts, strict=True):
        if wave and (len(wave) >= limit or keys + n > WAVE_KEYS):
            waves.append(wave)
            wave, keys = [], 0
        wave.append(slot)
        keys += n
    if wave:
        waves.append(wave)
    return waves
