"""The agent's gRPC control service (``netmigrate.agent.v1.AgentControl``).

Counters and slots; migration requests from the controller (served by the source side) and
from peer agents (request ids and the copy stream are served by the target side, priority
pulls by the source side). Errors become gRPC statuses with a message that says why.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import grpc

from netmigrate import __version__
from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent.channel import MAX_MESSAGE
from netmigrate.agent.config import AgentConfig, TlsFiles
from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.restore import Dump
from netmigrate.agent.slots import SlotTable
from netmigrate.agent.source import MigrationRequestError, SourceSide
from netmigrate.agent.stats import AgentStats
from netmigrate.agent.target import NotMigratingIn, TargetDataLost, TargetSide
from netmigrate.protocol import slotset

log = logging.getLogger(__name__)


class ControlledAgent(Protocol):
    """What the control service reads of the agent process (``app.Agent`` is one), so that
    the service does not import the process that starts it."""

    config: AgentConfig
    stats: AgentStats
    dedup: DedupWindow
    table: SlotTable
    #: The bound UDP address, once serving.
    address: tuple[str, int] | None
    #: The migration sides, None while the agent starts.
    source: SourceSide | None
    target: TargetSide | None
    #: The persisted migration state (transition epochs), None while the agent starts.
    store: MigrationStore | None


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ControlService(control_pb2_grpc.AgentControlServicer):
    def __init__(self, agent: ControlledAgent) -> None:
        self._agent = agent

    def _info(self) -> control_pb2.AgentInfo:
        agent = self._agent
        return control_pb2.AgentInfo(
            keyspace=agent.config.keyspace,
            server_id=agent.config.server_id,
            listen=format_address(*agent.address) if agent.address else "",
            redis=agent.config.redis.display(),
            version=__version__,
            uptime_seconds=agent.stats.snapshot().uptime_seconds,
            redis_version=agent.redis_version.version if agent.redis_version else "",
            rdb_version=agent.redis_version.rdb if agent.redis_version else 0,
        )

    async def GetStats(
        self, request: control_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetStatsResponse:
        snap = self._agent.stats.snapshot()
        dedup = self._agent.dedup
        counters = dict(snap.counters)
        counters.update(
            dedup_entries=len(dedup), dedup_bytes=dedup.bytes, dedup_evictions=dedup.evictions
        )
        for side in (self._agent.source, self._agent.target):
            if side is not None:
                counters.update(side.counters)
        return control_pb2.GetStatsResponse(
            agent=self._info(), requests=snap.requests, replies=snap.replies, counters=counters
        )

    async def GetSlots(
        self, request: control_pb2.GetSlotsRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetSlotsResponse:
        agent = self._agent
        table = agent.table
        migrations = []
        if agent.source is not None:
            migrations += [
                control_pb2.SlotMigrationState(
                    slot=r.slot,
                    role="out",
                    peer_id=r.peer,
                    phase=r.phase,
                    migration_id=r.migration_id,
                    epoch=r.epoch,
                )
                for r in agent.source.records()
            ]
        if agent.target is not None:
            migrations += [
                control_pb2.SlotMigrationState(
                    slot=inc.slot,
                    role="in",
                    peer_id=inc.source_id,
                    phase="migrating",
                    epoch=inc.epoch,
                )
                for inc in agent.target.incoming()
            ]
        epochs = agent.store.epochs() if agent.store is not None else {}
        return control_pb2.GetSlotsResponse(
            agent=self._info(),
            owned=[control_pb2.SlotRange(start=lo, end=hi) for lo, hi in table.owner_ranges()],
            owned_count=table.owner_count(),
            migrations=migrations,
            epochs=[
                control_pb2.SlotEpochRange(start=lo, end=hi, epoch=e)
                for lo, hi, e in slotset.runs(epochs)
            ],
        )

    # -- controller -> source ------------------------------------------------------------

    async def StartMigration(
        self, request: control_pb2.StartMigrationRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.MigrationStatus:
        source = await self._source(context)
        try:
            return await source.start_migration(request)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise  # unreachable: abort raises

    async def GetMigrationStatus(
        self, request: control_pb2.GetMigrationStatusRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetMigrationStatusResponse:
        source = await self._source(context)
        try:
            chosen = [source.get(request.migration_id)] if request.migration_id else source.all()
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise
        return control_pb2.GetMigrationStatusResponse(
            migrations=[
                await source.status_in_steps(m, include_slots=request.include_slots) for m in chosen
            ]
        )

    async def AbortMigration(
        self, request: control_pb2.MigrationRef, context: grpc.aio.ServicerContext
    ) -> control_pb2.MigrationStatus:
        source = await self._source(context)
        try:
            return await source.abort(request.migration_id)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise

    async def ResumeMigration(
        self, request: control_pb2.MigrationRef, context: grpc.aio.ServicerContext
    ) -> control_pb2.MigrationStatus:
        source = await self._source(context)
        try:
            return await source.resume(request.migration_id)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise

    async def SetMigrationRate(
        self, request: control_pb2.SetMigrationRateRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.MigrationStatus:
        source = await self._source(context)
        try:
            return await source.set_rate(request.migration_id, request.rate_keys_per_second)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise

    async def FinalizeMigration(
        self, request: control_pb2.FinalizeMigrationRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.FinalizeMigrationResponse:
        source = await self._source(context)
        if not 0 <= request.grace_seconds <= 3600:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "grace_seconds must be 0..3600")
        try:
            m, deleted, slots = await source.finalize(request.migration_id, request.grace_seconds)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise
        return control_pb2.FinalizeMigrationResponse(
            status=source.status(m), keys_deleted=deleted, slots_finalized=slots, changed=slots > 0
        )

    # -- source -> target ----------------------------------------------------------------

    async def TransferRequestIds(
        self, request: control_pb2.TransferRequestIdsRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.TransferRequestIdsResponse:
        target = await self._target(context)
        try:
            installed, slots = await target.transfer_ids(request)
        except NotMigratingIn as e:
            await context.abort(_not_in_code(e), str(e))
            raise
        return control_pb2.TransferRequestIdsResponse(installed=installed, slots=slots)

    async def Copy(
        self,
        request_iterator: AsyncIterator[control_pb2.CopyBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[control_pb2.CopyAck]:
        target = await self._target(context)
        async for batch in request_iterator:
            if batch.HasField("chunk"):  # a piece of a big key
                parts = [(batch.chunk.slot, [])]
            elif batch.parts:  # keys of several slots (a wave)
                parts = [(p.slot, _dumps(p.keys)) for p in batch.parts]
            else:
                parts = [(batch.slot, _dumps(batch.keys))]
            try:
                if batch.HasField("chunk"):
                    restored, skipped = await target.restore_piece(batch.source_id, batch.chunk)
                else:
                    restored, skipped = await target.restore_parts(batch.source_id, parts)
            except NotMigratingIn as e:
                await context.abort(_not_in_code(e), str(e))
                raise
            except Exception as e:  # Redis refused the batch: the source retries the slot
                log.warning("copy of slots %s: %s", [slot for slot, _ in parts], e)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"restoring the batch failed: {e}")
                raise
            yield control_pb2.CopyAck(
                slot=batch.slot, seq=batch.seq, restored=restored, skipped_dirty=skipped
            )

    async def RollBack(
        self, request: control_pb2.RollBackRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.RollBackResponse:
        target = await self._target(context)
        back, refused = await target.roll_back(
            request.source_id, list(request.slots), request.reason
        )
        return control_pb2.RollBackResponse(rolled_back=back, refused=refused)

    # -- target -> source ----------------------------------------------------------------

    async def Pull(
        self, request: control_pb2.PullRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.PullResponse:
        source = await self._source(context)
        try:
            keys = await source.pull(request)
        except MigrationRequestError as e:
            await context.abort(e.code, str(e))
            raise
        return control_pb2.PullResponse(keys=keys)

    async def _source(self, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        if self._agent.source is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is starting")
        return self._agent.source

    async def _target(self, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        if self._agent.target is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is starting")
        return self._agent.target


def _not_in_code(e: NotMigratingIn) -> grpc.StatusCode:
    """DATA_LOSS when the slot's state went with the target's Redis data: the source fails
    the slot at once instead of retrying what cannot succeed."""
    if isinstance(e, TargetDataLost):
        return grpc.StatusCode.DATA_LOSS
    return grpc.StatusCode.FAILED_PRECONDITION


def _dumps(keys: Iterable[control_pb2.KeyDump]) -> list[Dump]:
    return [Dump(k.key, k.dump if k.present else None, k.pttl) for k in keys]


def _read(path: object) -> bytes:
    with open(path, "rb") as f:  # type: ignore[arg-type]
        return f.read()


async def start_control_server(
    agent: ControlledAgent, host: str, port: int, tls: TlsFiles | None
) -> tuple[grpc.aio.Server, int]:
    """Serve the control API; returns the server and its bound port (``port`` may be 0)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 4000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    control_pb2_grpc.add_AgentControlServicer_to_server(ControlService(agent), server)
    address = format_address(host, port)
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(_read(tls.key), _read(tls.cert))],
            root_certificates=_read(tls.client_ca) if tls.client_ca else None,
            require_client_auth=tls.client_ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    await server.start()
    return server, bound
