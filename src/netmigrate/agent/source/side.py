"""``SourceSide``: the source side's steps wired together, and what the agent, its control
service and its data path call."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.config import RedisTarget
from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.heat import SlotHeat
from netmigrate.agent.interfaces import DatagramOut
from netmigrate.agent.migration_store import MigrationStore, SlotRecord
from netmigrate.agent.peers import Peers
from netmigrate.agent.slots import SlotTable
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.copy import Copier
from netmigrate.agent.source.finalize import Finalizer
from netmigrate.agent.source.handover import IdHandover
from netmigrate.agent.source.keys import CopyLimits, SourceKeys
from netmigrate.agent.source.lifecycle import Lifecycle
from netmigrate.agent.source.model import SLOT_RETRY_SECONDS, Migration
from netmigrate.agent.source.persistence import OutgoingSlots
from netmigrate.agent.source.prepare import Planner
from netmigrate.agent.source.rollback import Rollback
from netmigrate.agent.source.status import migration_status_in_steps
from netmigrate.agent.source.transitions import Transitions
from netmigrate.agent.source.waves import Runner
from netmigrate.protocol.codec import HeaderFields


class SourceSide:
    def __init__(
        self,
        *,
        datapath: DatagramOut,
        table: SlotTable,
        dedup: DedupWindow,
        store: MigrationStore,
        admin: Any,
        peers: Peers,
        keyspace: int,
        server_id: int,
        service: tuple[str, int] | None,
        control_address: str,
        redis_target: RedisTarget | None = None,
        slot_retry_seconds: float = SLOT_RETRY_SECONDS,
        copy_limits: CopyLimits | None = None,
        heat: SlotHeat | None = None,
    ) -> None:
        ctx = self._ctx = SourceContext(
            table=table,
            store=store,
            dedup=dedup,
            admin=admin,
            peers=peers,
            keyspace=keyspace,
            server_id=server_id,
            service=service,
            control_address=control_address,
            slot_retry_seconds=slot_retry_seconds,
            slots=OutgoingSlots(table, store),
            keys=SourceKeys(redis_target, copy_limits),
            heat=heat if heat is not None else SlotHeat(),
        )
        self.counters = ctx.counters
        self._migrations = ctx.migrations
        planner = Planner(ctx)
        self._transitions = Transitions(ctx, datapath)
        self._copier = Copier(ctx)
        self._rollback = Rollback(ctx)
        runner = Runner(
            ctx,
            planner=planner,
            transitions=self._transitions,
            handover=IdHandover(ctx),
            copier=self._copier,
            rollback=self._rollback,
        )
        self._lifecycle = Lifecycle(ctx, planner, runner)
        self._finalizer = Finalizer(ctx, planner)

    @property
    def control_address(self) -> str:
        """How peers reach this agent's control service (when the controller does not say)."""
        return self._ctx.control_address

    @control_address.setter
    def control_address(self, address: str) -> None:
        self._ctx.control_address = address

    @property
    def slot_retry_seconds(self) -> float:
        return self._ctx.slot_retry_seconds

    @slot_retry_seconds.setter
    def slot_retry_seconds(self, seconds: float) -> None:
        self._ctx.slot_retry_seconds = seconds

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self, records: dict[int, SlotRecord]) -> None:
        """Restore slots in flight and migrations after a restart; RUNNING ones continue."""
        await self._lifecycle.load(records)

    async def redis_lost(self, why: str) -> None:
        """This agent's Redis lost its data: running migrations fail now, saying why."""
        await self._rollback.redis_lost(why)

    async def stop(self) -> None:
        tasks = [m.task for m in self._migrations.values() if m.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._ctx.keys.close()
        self._ctx.store.close()

    def records(self) -> list[SlotRecord]:
        return self._ctx.slots.sorted_records()

    # -- the acknowledgements, from the data path ----------------------------------------

    def on_transition_reply(
        self, fields: HeaderFields, body: Any, commands: list[bytes], callbacks: list[Any]
    ) -> None:
        """The target's answer to SLOT_START / SLOT_COMPLETE, in arrival order."""
        self._transitions.on_reply(fields, body, commands, callbacks)

    # -- control requests ----------------------------------------------------------------

    async def start_migration(
        self, req: control_pb2.StartMigrationRequest
    ) -> control_pb2.MigrationStatus:
        return await self._lifecycle.start_migration(req)

    def get(self, migration_id: str) -> Migration:
        return self._lifecycle.get(migration_id)

    def all(self) -> list[Migration]:
        return self._lifecycle.all()

    async def abort(self, migration_id: str) -> control_pb2.MigrationStatus:
        return await self._lifecycle.abort(migration_id)

    async def resume(self, migration_id: str) -> control_pb2.MigrationStatus:
        return await self._lifecycle.resume(migration_id)

    async def set_rate(self, migration_id: str, rate: int) -> control_pb2.MigrationStatus:
        return await self._lifecycle.set_rate(migration_id, rate)

    def status(
        self, m: Migration, *, changed: bool = False, include_slots: bool = False
    ) -> control_pb2.MigrationStatus:
        return self._lifecycle.status(m, changed=changed, include_slots=include_slots)

    async def status_in_steps(
        self, m: Migration, *, include_slots: bool = False
    ) -> control_pb2.MigrationStatus:
        """:meth:`status` for the control API, a long slot list built without holding the
        data path (:func:`~netmigrate.agent.source.status.migration_status_in_steps`)."""
        return await migration_status_in_steps(m, self._ctx.server_id, include_slots=include_slots)

    # -- served to the target ------------------------------------------------------------

    async def pull(self, req: control_pb2.PullRequest) -> list[control_pb2.KeyDump]:
        return await self._copier.pull(req)

    # -- finalize ------------------------------------------------------------------------

    async def finalize(self, migration_id: str, grace: float) -> tuple[Migration, int, int]:
        """Delete the moved keys here; (migration, keys deleted, slots finalized)."""
        m = self.get(migration_id)
        deleted, slots = await self._finalizer.finalize(m, grace)
        return m, deleted, slots
