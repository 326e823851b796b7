"""Giving a slot that cannot move back to the source (issue #12.6), and failing migrations
whose source Redis lost its data (#12.8).

A slot whose steps keep failing (or fail for good: the target's Redis lost its data) goes
back to this agent only when the target confirms it holds no client write for it (gRPC
``RollBack``): then this agent owns it again, the slot's record is dropped, and the
controller points the switch back here (``reconcile`` does the same). Otherwise the slot
stays in flight, frozen here and readable through double reads, and the migration reports
why. Any phase but done may roll back: after a SLOT_COMPLETE the target either owns the slot
(it refuses) or does not (the switch is pointed back here, as for any rolled-back slot).
"""

from __future__ import annotations

import logging
import time

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import FINISHED_PHASES, RPC_TIMEOUT, Migration

log = logging.getLogger(__name__)


class Rollback:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx

    async def give_back(self, m: Migration, slots: list[int], why: str) -> dict[int, str]:
        """Try to take ``slots`` back from the target; {slot: why it stays in flight} for
        those that could not be (an empty dict: all are owned here again)."""
        ctx = self._ctx
        mrec = m.record
        kept: dict[int, str] = {}
        ask = []
        for slot in slots:
            rec = ctx.slots.records.get(slot)
            if rec is not None and (rec.migration_id != mrec.migration_id or rec.phase == "done"):
                kept[slot] = f"it is {rec.phase} in migration {rec.migration_id}"
            else:
                ask.append(slot)
        if not ask:
            return kept
        try:
            reply = await ctx.peers.stub(mrec.target_control).RollBack(
                control_pb2.RollBackRequest(source_id=ctx.server_id, slots=ask, reason=why),
                timeout=RPC_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            text = f"the target cannot say whether it holds writes ({e.code().name}: {e.details()})"
            return kept | dict.fromkeys(ask, text)
        back = sorted(set(reply.rolled_back) & set(ask))
        for slot in ask:
            if slot not in back:
                prefix = f"slot {slot}:"
                kept[slot] = next(
                    (r[len(prefix) :].strip() for r in reply.refused if r.startswith(prefix)),
                    "the target keeps it",
                )
        if back:
            await ctx.slots.given_back(back)
            now = time.time()
            for slot in back:
                run = m.slots[slot]
                run.phase, run.finished = "rolled_back", now
            log.warning(
                "migration %s: %d slots rolled back to this agent: %s",
                mrec.migration_id,
                len(back),
                why,
            )
        return kept

    async def redis_lost(self, why: str) -> None:
        """This agent's Redis lost its data: every migration still moving slots fails now
        with the reason (the copies would carry nothing, or hold stale data). Its slots own
        nothing here any more (the agent dropped every slot); a target keeps what it
        has migrating in, and nobody completes them."""
        for m in self._ctx.migrations.values():
            if not m.running:
                continue
            m.abort = True
            assert m.task is not None
            m.task.cancel()
            for run in m.slots.values():
                if run.phase not in FINISHED_PHASES:
                    run.phase, run.error = "failed", why
            m.failures.append(why)
            m.record.state, m.record.error, m.record.finished = "FAILED", why, time.time()
            try:
                await self._ctx.store.persist(migration=m.record)
            except Exception as e:  # the report in memory stands; the write is best effort
                mid = m.record.migration_id
                log.error("migration %s: could not record the failure: %s", mid, e)
            log.error("migration %s failed: %s", m.record.migration_id, why)
