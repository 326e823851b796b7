"""``TargetSide``: the target side's parts wired together, and what the agent, its control
service and its data path call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.commands import OpSpec
from netmigrate.agent.interfaces import RequestPath
from netmigrate.agent.migration_store import MigrationStore, SlotRecord
from netmigrate.agent.peers import Peers
from netmigrate.agent.reserved import dirty_key, marker_key
from netmigrate.agent.restore import Dump
from netmigrate.agent.slots import SlotState, SlotTable
from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.holding import HoldQueue
from netmigrate.agent.target.intake import Intake
from netmigrate.agent.target.model import Incoming
from netmigrate.agent.target.requests import IncomingRequests
from netmigrate.agent.target.rollback import Rollbacks
from netmigrate.agent.target.transitions import TargetTransitions
from netmigrate.protocol.codec import HeaderFields

log = logging.getLogger(__name__)


class TargetSide:
    def __init__(
        self,
        *,
        datapath: RequestPath,
        table: SlotTable,
        store: MigrationStore,
        admin: Any,
        peers: Peers,
        server_id: int,
        hold_limit: int = 10_000,
        hold_timeout: float = 1.0,
    ) -> None:
        ctx = self._ctx = TargetContext(
            dp=datapath, table=table, store=store, admin=admin, peers=peers, server_id=server_id
        )
        self.counters = ctx.counters
        self._slots = ctx.slots
        self._holds = HoldQueue(ctx, hold_limit, hold_timeout)
        self._transitions = TargetTransitions(ctx, self._holds)
        self._requests = IncomingRequests(ctx, self._holds)
        self._intake = Intake(ctx, self._holds)
        self._rollbacks = Rollbacks(ctx, self._holds)
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self, records: dict[int, SlotRecord]) -> None:
        """Restore slots migrating in after a restart (their dirty marks are authority)."""
        loop = asyncio.get_running_loop()
        for slot, rec in sorted(records.items()):
            if rec.role != "in":
                continue
            if rec.phase == "cleanup":
                await self._ctx.admin.delete(dirty_key(slot), marker_key(slot))
                await self._ctx.store.persist(slots={slot: None})
                self._ctx.table.set_state([slot], SlotState.OWNED)
                continue
            inc = Incoming(slot, rec.peer, rec.started, epoch=rec.epoch)
            dirty = await self._ctx.admin.smembers(dirty_key(slot))
            inc.authoritative.update(dirty)
            await self._ctx.admin.set(marker_key(slot), str(rec.peer), nx=True)
            inc.persisted = loop.create_future()
            inc.persisted.set_result(True)
            self._slots[slot] = inc
            self._ctx.table.set_state([slot], SlotState.MIGRATING_IN)
            log.info(
                "slot %d migrates in from server %d (%d keys marked dirty); waiting for the "
                "source's request ids",
                slot,
                rec.peer,
                len(dirty),
            )

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._holds.sweep(), name="target-hold-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._ctx.tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def incoming(self) -> list[Incoming]:
        return [self._slots[s] for s in sorted(self._slots)]

    def states(self) -> list[tuple[int, int]]:
        """(slot, source id) of every slot migrating in."""
        return [(s, inc.source_id) for s, inc in sorted(self._slots.items())]

    def redis_lost(self, why: str) -> None:
        """The agent's Redis lost its data: the slots migrating in are lost here (#12.8)."""
        self._rollbacks.redis_lost(why)

    # -- from the data path, in arrival order --------------------------------------------

    def on_transition(self, fields: HeaderFields, epoch: int, addr: Any) -> None:
        """A SLOT_START or SLOT_COMPLETE request (of the migration ``epoch``), in arrival
        order with client requests."""
        self._transitions.on_transition(fields, epoch, addr)

    def handle(
        self,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        data: bytes,
        addr: Any,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """A data request for a slot that migrates in (admitted by SlotTable as TARGET)."""
        self._requests.handle(fields, body, spec, data, addr, commands, callbacks)

    # -- from the source agent (gRPC) ----------------------------------------------------

    async def transfer_ids(
        self, request: control_pb2.TransferRequestIdsRequest
    ) -> tuple[int, list[int]]:
        """Install the source's request ids of one slot or several; (entries installed, the
        slots of a multi-slot request)."""
        return await self._intake.transfer_ids(request)

    async def restore_batch(self, slot: int, source: int, dumps: list[Dump]) -> tuple[int, int]:
        """Restore copied keys of one slot (skipping dirty ones); (restored, skipped)."""
        return await self._intake.restore_parts(source, [(slot, dumps)])

    async def restore_parts(
        self, source: int, parts: list[tuple[int, list[Dump]]]
    ) -> tuple[int, int]:
        """Restore copied keys of one or more slots; (restored, skipped as dirty)."""
        return await self._intake.restore_parts(source, parts)

    async def roll_back(
        self, source: int, slots: list[int], reason: str
    ) -> tuple[list[int], list[str]]:
        """Give slots back to the source where no client write was applied here; (the
        slots given back, a reason per slot kept)."""
        return await self._rollbacks.roll_back(source, slots, reason)

    async def restore_piece(self, source: int, piece: control_pb2.KeyChunk) -> tuple[int, int]:
        """One piece of a key moved in pieces; (restored, skipped as dirty) by its last."""
        return await self._intake.restore_piece(source, piece)
