"""The agent's gRPC control service (``netmigrate.agent.v1.AgentControl``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from netmigrate import __version__
from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent.config import TlsFiles
from netmigrate.agent.slots import SlotState

if TYPE_CHECKING:
    from netmigrate.agent.app import Agent


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ControlService(control_pb2_grpc.AgentControlServicer):
    def __init__(self, agent: Agent) -> None:
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
        return control_pb2.GetStatsResponse(
            agent=self._info(), requests=snap.requests, replies=snap.replies, counters=counters
        )

    async def GetSlots(
        self, request: control_pb2.GetSlotsRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetSlotsResponse:
        table = self._agent.table
        return control_pb2.GetSlotsResponse(
            agent=self._info(),
            owned=[
                control_pb2.SlotRange(start=lo, end=hi) for lo, hi in table.ranges(SlotState.OWNED)
            ],
            owned_count=table.count(SlotState.OWNED),
        )


def _read(path: object) -> bytes:
    with open(path, "rb") as f:  # type: ignore[arg-type]
        return f.read()


async def start_control_server(
    agent: Agent, host: str, port: int, tls: TlsFiles | None
) -> tuple[grpc.aio.Server, int]:
    """Serve the control API; returns the server and its bound port (``port`` may be 0)."""
    server = grpc.aio.server()
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
