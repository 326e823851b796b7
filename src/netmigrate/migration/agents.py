"""The controller's gRPC client of one agent's control service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from netmigrate.agent.channel import (
    DEFAULT_TIMEOUT,
    AgentControlStub,
    control_pb2,
    open_channel,
)
from netmigrate.migration.model import AgentEndpoint, MigrationError
from netmigrate.protocol.slotset import to_ranges


class AgentClient:
    """``async with AgentClient(endpoint) as agent: await agent.slots()``."""

    def __init__(
        self,
        endpoint: AgentEndpoint,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        wait_for_ready: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        #: Calls wait (up to their timeout) for a channel that is reconnecting instead of
        #: failing at once with UNAVAILABLE: for pollers of an agent that may be restarting.
        self.wait_for_ready = wait_for_ready
        self._channel: grpc.aio.Channel | None = None
        self._stub: AgentControlStub | None = None

    async def __aenter__(self) -> AgentClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        if self._channel is not None:
            return
        self._channel = open_channel(self.endpoint.control, self.endpoint.tls)
        self._stub = AgentControlStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._stub = None

    async def _call(
        self,
        name: str,
        request: Any,
        timeout: float | None = None,
        wait_for_ready: bool | None = None,
    ) -> Any:
        self.open()
        method = getattr(self._stub, name)
        if wait_for_ready is None:
            wait_for_ready = self.wait_for_ready
        try:
            return await method(
                request, timeout=timeout or self.timeout, wait_for_ready=wait_for_ready
            )
        except grpc.aio.AioRpcError as e:
            raise MigrationError(
                f"server {self.endpoint.server_id} ({self.endpoint.control}): {name}: "
                f"{e.code().name}: {e.details()}",
                code=e.code().name,
            ) from None

    async def slots(self) -> control_pb2.GetSlotsResponse:
        return await self._call("GetSlots", control_pb2.GetSlotsRequest())

    async def identify(self, keyspace: int) -> control_pb2.GetSlotsResponse:
        """GetSlots, checked: the agent must be the server and keyspace the caller expects."""
        reply = await self.slots()
        info = reply.agent
        ep = self.endpoint
        if info.server_id != ep.server_id or info.keyspace != keyspace:
            raise MigrationError(
                f"{ep.control} is server {info.server_id} of keyspace {info.keyspace}, "
                f"expected server {ep.server_id} of keyspace {keyspace}",
                code="FAILED_PRECONDITION",
            )
        return reply

    async def start(
        self,
        migration_id: str,
        slots: Iterable[int],
        target: AgentEndpoint,
        *,
        service: str,
        batch: int,
        rate: int,
        parallel: int,
        dry_run: bool = False,
    ) -> control_pb2.MigrationStatus:
        request = control_pb2.StartMigrationRequest(
            migration_id=migration_id,
            slots=[control_pb2.SlotRange(start=lo, end=hi) for lo, hi in to_ranges(slots)],
            target_id=target.server_id,
            target_control=target.control,
            target_data=target.data,
            service=service,
            batch_keys=batch,
            rate_keys_per_second=rate,
            parallel_slots=parallel,
            dry_run=dry_run,
            source_control=self.endpoint.control,
        )
        # The agent counts the keys of every slot before it answers: allow for big slot sets.
        return await self._call("StartMigration", request, timeout=max(self.timeout, 60.0))

    async def status(
        self,
        migration_id: str = "",
        *,
        include_slots: bool = False,
        timeout: float | None = None,
        wait_for_ready: bool | None = None,
    ) -> list[control_pb2.MigrationStatus]:
        """``timeout`` / ``wait_for_ready``: this call's, instead of the client's."""
        reply = await self._call(
            "GetMigrationStatus",
            control_pb2.GetMigrationStatusRequest(
                migration_id=migration_id, include_slots=include_slots
            ),
            timeout,
            wait_for_ready,
        )
        return list(reply.migrations)

    async def abort(self, migration_id: str) -> control_pb2.MigrationStatus:
        return await self._call(
            "AbortMigration", control_pb2.MigrationRef(migration_id=migration_id)
        )

    async def resume(self, migration_id: str) -> control_pb2.MigrationStatus:
        return await self._call(
            "ResumeMigration", control_pb2.MigrationRef(migration_id=migration_id)
        )

    async def set_rate(self, migration_id: str, rate: int) -> control_pb2.MigrationStatus:
        return await self._call(
            "SetMigrationRate",
            control_pb2.SetMigrationRateRequest(
                migration_id=migration_id, rate_keys_per_second=rate
            ),
        )

    async def finalize(
        self, migration_id: str, grace: float
    ) -> control_pb2.FinalizeMigrationResponse:
        return await self._call(
            "FinalizeMigration",
            control_pb2.FinalizeMigrationRequest(migration_id=migration_id, grace_seconds=grace),
            timeout=max(self.timeout, grace + 120.0),
        )
