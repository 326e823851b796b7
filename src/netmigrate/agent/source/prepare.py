"""Before a migration starts: the request checked, the target asked who it is and what it
owns, and every slot classified (to move, already at the target, or refused)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent import redis_version
from netmigrate.agent.config import ConfigError, parse_host_port
from netmigrate.agent.migration_store import MigrationRecord
from netmigrate.agent.slots import OWNER_STATES
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import (
    ACTIVE_STATES,
    DEFAULT_BATCH,
    DEFAULT_PARALLEL,
    FINISHED_PHASES,
    MAX_BATCH,
    MAX_PARALLEL,
    RPC_TIMEOUT,
    MigrationRequestError,
    StepFailed,
)
from netmigrate.protocol.constants import MAX_SERVER_ID
from netmigrate.protocol.slotset import to_ranges


@dataclass
class Plan:
    """What a migration's request comes to: the slots to move (in order), those the target
    has already, those that cannot move (with why), and the keys to copy (an estimate)."""

    move: list[int]
    skipped: set[int]
    refused: dict[int, str]
    estimate: int


class Planner:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx

    def validate(self, req: control_pb2.StartMigrationRequest) -> MigrationRecord:
        ctx = self._ctx
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if not req.migration_id or len(req.migration_id) > 200:
            raise MigrationRequestError(bad, "migration_id must be 1..200 characters")
        if not req.slots:
            raise MigrationRequestError(bad, "no slots given")
        slots: set[int] = set()
        for r in req.slots:
            if not r.start <= r.end < 16384:
                raise MigrationRequestError(bad, f"bad slot range {r.start}-{r.end}")
            slots.update(range(r.start, r.end + 1))
        if not 1 <= req.target_id <= MAX_SERVER_ID or req.target_id == ctx.server_id:
            raise MigrationRequestError(bad, f"bad target server id {req.target_id}")
        if not req.target_control:
            raise MigrationRequestError(bad, "target_control (HOST:PORT) is required")
        service = req.service
        if not service:
            if ctx.service is None:
                raise MigrationRequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no service address: give it in the request or start the agent with --service",
                )
            host, port = ctx.service
            service = f"{host}:{port}"
        try:
            parse_host_port(service, "service")
            parse_host_port(req.target_control, "target_control")
            if req.target_data:
                parse_host_port(req.target_data, "target_data")
        except ConfigError as e:
            raise MigrationRequestError(bad, str(e)) from None
        batch = req.batch_keys or DEFAULT_BATCH
        parallel = req.parallel_slots or DEFAULT_PARALLEL
        if not 1 <= batch <= MAX_BATCH:
            raise MigrationRequestError(bad, f"batch_keys must be 1..{MAX_BATCH}")
        if not 1 <= parallel <= MAX_PARALLEL:
            raise MigrationRequestError(bad, f"parallel_slots must be 1..{MAX_PARALLEL}")
        source_control = req.source_control or ctx.control_address
        if not source_control or source_control.startswith(("0.0.0.0:", "[::]:")):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the target must reach this agent's control service: give source_control "
                f"(this agent's control service is bound to {source_control or 'nothing'})",
            )
        return MigrationRecord(
            migration_id=req.migration_id,
            target_id=req.target_id,
            target_control=req.target_control,
            target_data=req.target_data,
            service=service,
            slots=to_ranges(slots),
            batch_keys=batch,
            rate_keys_per_second=req.rate_keys_per_second,
            parallel_slots=parallel,
            source_control=source_control,
        )

    async def plan(self, mrec: MigrationRecord) -> Plan:
        info, target_owned = await self.target_slots(mrec)
        await self.check_versions(mrec, info.agent)
        move, skipped, refused = self.classify(mrec, target_owned)
        for m in info.migrations:
            if m.slot in move:
                move.remove(m.slot)
                refused[m.slot] = (
                    f"server {mrec.target_id} has it {m.phase} ({m.role}) in migration "
                    f"{m.migration_id or '?'}: finish or finalize that first"
                )
        return Plan(move, skipped, refused, await self.count_keys(move))

    async def target_slots(self, mrec: MigrationRecord) -> tuple[Any, set[int]]:
        """Ask the target who it is, what it owns and has in flight (GetSlotsResponse, owned
        slots); refuse a target that is not the one named."""
        ctx = self._ctx
        try:
            reply = await ctx.peers.stub(mrec.target_control).GetSlots(
                control_pb2.GetSlotsRequest(), timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"the target's control service {mrec.target_control} does not answer: "
                f"{e.code().name}: {e.details()}",
            ) from None
        info = reply.agent
        if info.server_id != mrec.target_id or info.keyspace != ctx.keyspace:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{mrec.target_control} is server {info.server_id} of keyspace {info.keyspace}, "
                f"not server {mrec.target_id} of keyspace {ctx.keyspace}",
            )
        if mrec.target_data and not _same_address(mrec.target_data, info.listen):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"server {info.server_id} serves UDP at {info.listen}, not {mrec.target_data}",
            )
        owned = {s for r in reply.owned for s in range(r.start, r.end + 1)}
        return reply, owned

    async def check_versions(self, mrec: MigrationRecord, target: Any) -> None:
        """Refuse, before the first slot moves, a target whose Redis cannot RESTORE this
        Redis' DUMPs (an older RDB version): every copy would fail, leaving slots frozen."""
        try:
            mine = await redis_version.probe(self._ctx.admin)
        except Exception as e:  # redis-py raises many types; the migration just cannot start
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE, f"this agent's Redis does not answer: {e}"
            ) from None
        theirs = redis_version.RedisVersion(target.redis_version or "?", target.rdb_version)
        why = redis_version.restore_refusal(mine, theirs, mrec.target_id)
        if why is not None:
            raise MigrationRequestError(grpc.StatusCode.FAILED_PRECONDITION, why)

    async def target_owns(self, mrec: MigrationRecord, slot: int) -> bool:
        try:
            _, owned = await self.target_slots(mrec)
        except MigrationRequestError:
            return False
        return slot in owned

    def classify(
        self, mrec: MigrationRecord, target_owned: set[int]
    ) -> tuple[list[int], set[int], dict[int, str]]:
        ctx = self._ctx
        records = ctx.slots.records
        move: list[int] = []
        skipped: set[int] = set()
        refused: dict[int, str] = {}
        busy = {
            s
            for m in ctx.migrations.values()
            if m.running or m.record.state in ACTIVE_STATES
            for s, run in m.slots.items()
            if run.phase not in FINISHED_PHASES
        }
        for slot in mrec.slot_set():
            state = ctx.table.state(slot)
            mine = state in OWNER_STATES
            if slot in target_owned:
                if mine:
                    refused[slot] = "both agents own it"
                else:
                    skipped.add(slot)
            elif not mine:
                refused[slot] = f"not owned here ({state.name}) nor by the target"
            elif slot in busy or slot in records:
                other = records[slot].migration_id if slot in records else "?"
                refused[slot] = f"in flight in migration {other} (resume that one)"
            else:
                move.append(slot)
        return move, skipped, refused

    async def count_keys(self, slots: list[int]) -> int:
        # On the raw connection, in scripts: through redis-py this cost the source ~10 us of
        # CPU per slot, once per migration, while the source is busiest.
        try:
            return await self._ctx.keys.count_keys(slots)
        except (StepFailed, OSError) as e:
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE, f"this agent's Redis does not answer: {e}"
            ) from None


def _same_address(a: str, b: str) -> bool:
    try:
        return parse_host_port(a, "address") == parse_host_port(b, "address")
    except ConfigError:
        return False
