"""A migration's lifecycle at the source: started (after its plan), aborted, resumed, its rate
changed, and after a restart taken up again from what was persisted."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.migration_store import SlotRecord
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import (
    ACTIVE_STATES,
    FINISHED_PHASES,
    Migration,
    MigrationRequestError,
    SlotRun,
    slot_runs,
)
from netmigrate.agent.source.prepare import Planner
from netmigrate.agent.source.status import migration_status
from netmigrate.agent.source.waves import Runner
from netmigrate.protocol.slotset import to_ranges

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, ctx: SourceContext, planner: Planner, runner: Runner) -> None:
        self._ctx = ctx
        self._planner = planner
        self._runner = runner
        #: One StartMigration at a time: the same id twice must not launch two runs.
        self._start_lock = asyncio.Lock()

    def status(
        self, m: Migration, *, changed: bool = False, include_slots: bool = False
    ) -> control_pb2.MigrationStatus:
        return migration_status(
            m, self._ctx.server_id, changed=changed, include_slots=include_slots
        )

    async def load(self, records: dict[int, SlotRecord]) -> None:
        """Restore slots in flight and migrations after a restart; RUNNING ones continue."""
        ctx = self._ctx
        ctx.slots.restore(records)
        for mid, mrec in (await ctx.store.load_migrations()).items():
            ctx.migrations[mid] = Migration(mrec, slot_runs(mrec, records))
        for m in ctx.migrations.values():
            if m.record.state in ACTIVE_STATES:
                m.abort = m.record.state == "ABORTING"
                log.info("continuing migration %s after a restart", m.record.migration_id)
                self._runner.launch(m)

    async def start_migration(
        self, req: control_pb2.StartMigrationRequest
    ) -> control_pb2.MigrationStatus:
        async with self._start_lock:
            return await self._start_migration(req)

    async def _start_migration(
        self, req: control_pb2.StartMigrationRequest
    ) -> control_pb2.MigrationStatus:
        mrec = self._planner.validate(req)
        existing = self._ctx.migrations.get(mrec.migration_id)
        if existing is not None:
            if not existing.record.same_request(mrec):
                raise MigrationRequestError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"migration {mrec.migration_id} exists with other slots or another target",
                )
            return self.status(existing, changed=False)
        plan = await self._planner.plan(mrec)
        move, skipped, refused, estimate = plan.move, plan.skipped, plan.refused, plan.estimate
        if req.dry_run:
            runs = {
                s: SlotRun(s, "skipped" if s in skipped else "pending") for s in mrec.slot_set()
            }
            m = Migration(mrec, runs, keys_estimate=estimate)
            m.record.state = "PLANNED"
            runs.update({s: SlotRun(s, "failed", error=why) for s, why in refused.items()})
            status = self.status(m, changed=False, include_slots=True)
            status.refused.extend(
                control_pb2.SlotRange(start=lo, end=hi) for lo, hi in to_ranges(refused)
            )
            return status
        if refused:
            text = ", ".join(f"{s}: {why}" for s, why in sorted(refused.items())[:5])
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{len(refused)} slots cannot move from server {self._ctx.server_id}: {text}{more}",
            )
        mrec.skipped = to_ranges(skipped)
        mrec.started = time.time()
        mrec.state = "RUNNING" if move else "DONE"
        if not move:
            mrec.finished = mrec.started
        await self._ctx.store.persist(migration=mrec)
        m = Migration(mrec, slot_runs(mrec, {}), keys_estimate=estimate)
        self._ctx.migrations[mrec.migration_id] = m
        log.info(
            "migration %s: %d slots to server %d (%d skipped, %d keys)",
            mrec.migration_id,
            len(move),
            mrec.target_id,
            len(skipped),
            estimate,
        )
        if move:
            self._runner.launch(m)
        return self.status(m, changed=True)

    def get(self, migration_id: str) -> Migration:
        m = self._ctx.migrations.get(migration_id)
        if m is None:
            raise MigrationRequestError(grpc.StatusCode.NOT_FOUND, f"no migration {migration_id!r}")
        return m

    def all(self) -> list[Migration]:
        return sorted(self._ctx.migrations.values(), key=lambda m: m.record.started)

    async def abort(self, migration_id: str) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        if m.record.state in ("DONE", "FINALIZED", "ABORTED") and not m.running:
            return self.status(m, changed=False)
        m.abort = True
        m.record.state = "ABORTING"
        await self._ctx.store.persist(migration=m.record)
        if not m.running:
            self._runner.launch(m)  # finishes the slots in flight, starts none
        return self.status(m, changed=True)

    async def resume(self, migration_id: str) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        unfinished = any(run.phase not in FINISHED_PHASES for run in m.slots.values())
        if m.running and not m.abort:
            return self.status(m, changed=False)
        if not unfinished:
            return self.status(m, changed=False)
        if m.running:  # aborting: let it end, then run again without the abort
            m.abort = False
            await asyncio.wait({m.task})  # type: ignore[arg-type]
        m.abort = False
        m.record.state = "RUNNING"
        m.record.error = ""
        m.record.finished = 0.0
        await self._ctx.store.persist(migration=m.record)
        self._runner.launch(m)
        return self.status(m, changed=True)

    async def set_rate(self, migration_id: str, rate: int) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        if m.record.rate_keys_per_second == rate:
            return self.status(m, changed=False)
        m.record.rate_keys_per_second = rate
        await self._ctx.store.persist(migration=m.record)
        if m.limiter is not None:
            m.limiter.set_rate(rate)
        log.info("migration %s: rate limit now %s", migration_id, rate or "none")
        return self.status(m, changed=True)
