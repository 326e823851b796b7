"""Finalize: once the target owns every moved slot (asked, not assumed) and the grace period
has passed, the moved keys are deleted here and the slots forgotten.

A moved slot the target no longer owns because it migrated it on (B -> C before A's finalize)
is finalized too: the target owned it (the slot is done here), so the copy here is stale
whoever owns the slot now, and keeping it would wedge the slot here forever (#12, item 5). A
slot the target owns no more *without* having migrated it out (its Redis lost it, a different
agent at its address) keeps its keys here, for an operator to look at."""

from __future__ import annotations

import asyncio
import time

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.resp import command as resp_command
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import (
    RPC_TIMEOUT,
    Migration,
    MigrationRequestError,
    StepFailed,
)
from netmigrate.agent.source.prepare import Planner

#: Slots per round trip and per persisted change.
_CHUNK = 256
#: Keys per UNLINK.
_UNLINK_KEYS = 1000


class Finalizer:
    def __init__(self, ctx: SourceContext, planner: Planner) -> None:
        self._ctx = ctx
        self._planner = planner

    async def finalize(self, m: Migration, grace: float) -> tuple[int, int]:
        """Delete the moved keys here; (keys deleted, slots finalized)."""
        async with m.finalizing:  # a second call finds what the first one left: nothing
            return await self._finalize(m, grace)

    async def _finalize(self, m: Migration, grace: float) -> tuple[int, int]:
        ctx = self._ctx
        migration_id = m.record.migration_id
        if m.running:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"migration {migration_id} is still {m.record.state}; finalize after it ends",
            )
        done = sorted(s for s, run in m.slots.items() if run.phase == "done")
        if not done:
            return 0, 0
        slots_reply, owned = await self._planner.target_slots(m.record)
        missing = [s for s in done if s not in owned]
        if missing:
            moved_on = await self._moved_on(m, slots_reply)
            missing = [s for s in missing if s not in moved_on]
        if missing:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"server {m.record.target_id} does not own {len(missing)} moved slots "
                f"(first {missing[0]}): keys are kept",
            )
        latest = max(m.slots[s].finished for s in done)
        wait = latest + grace - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        deleted = 0
        for i in range(0, len(done), _CHUNK):
            chunk = done[i : i + _CHUNK]
            try:
                unlinks = [  # one per slot and 1000 keys: UNLINK is single-slot in cluster mode
                    resp_command(b"UNLINK", *keys[j : j + _UNLINK_KEYS])
                    for keys in await ctx.keys.list_keys(chunk)
                    for j in range(0, len(keys), _UNLINK_KEYS)
                ]
                deleted += sum(int(n) for n in await ctx.keys.calls(unlinks))
            except (StepFailed, OSError) as e:
                raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None

            def gone(chunk: list[int] = chunk) -> None:
                for slot in chunk:
                    m.slots[slot].phase = "finalized"

            await ctx.slots.finalized(chunk, then=gone)
        ctx.counters["source_keys_finalized"] += deleted
        if m.record.state == "DONE" and all(
            run.phase in ("finalized", "skipped") for run in m.slots.values()
        ):
            m.record.state = "FINALIZED"
            await ctx.store.persist(migration=m.record)
        return deleted, len(done)

    async def _moved_on(self, m: Migration, slots_reply: control_pb2.GetSlotsResponse) -> set[int]:
        """Slots the target migrated out (to a third server, or on its way there): in flight
        or moved there, or done by one of its migrations."""
        out = {s.slot for s in slots_reply.migrations if s.role == "out"}
        try:
            reply = await self._ctx.peers.stub(m.record.target_control).GetMigrationStatus(
                control_pb2.GetMigrationStatusRequest(include_slots=True), timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"the target's control service {m.record.target_control} does not answer: "
                f"{e.code().name}: {e.details()}",
            ) from None
        moved = (control_pb2.DONE, control_pb2.FINALIZED)
        for status in reply.migrations:
            if status.source_id == m.record.target_id:
                out.update(s.slot for s in status.slots if s.phase in moved)
        return out
