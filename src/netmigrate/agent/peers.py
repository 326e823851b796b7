"""gRPC channels from this agent to other agents' control services (migration peers).

One channel per address, kept for the agent's life. With :class:`ControlTls` the channel is
TLS: ``ca`` verifies the peer's certificate; ``cert`` / ``key`` (the agent's own control
certificate by default) answer a peer that requires client certificates.
"""

from __future__ import annotations

import grpc

from netmigrate.agent.channel import AgentControlStub, ControlTls, open_channel


class Peers:
    def __init__(self, tls: ControlTls | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> AgentControlStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self._tls)
        return AgentControlStub(channel)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace=None)
