"""gRPC channels from this agent to other agents' control services (migration peers).

One channel per address, kept for the agent's life. With :class:`PeerTls` the channel is TLS:
``ca`` verifies the peer's certificate; ``cert`` / ``key`` (the agent's own control
certificate by default) answer a peer that requires client certificates.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from netmigrate._generated.agent.v1 import control_pb2_grpc
from netmigrate.agent.config import MAX_MESSAGE, PeerTls

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # Notice a dead peer within seconds even on an idle stream.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def credentials(tls: PeerTls) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca), private_key=read(tls.key), certificate_chain=read(tls.cert)
    )


def open_channel(address: str, tls: PeerTls | None) -> grpc.aio.Channel:
    options = list(CHANNEL_OPTIONS)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, credentials(tls), options=options)


class Peers:
    def __init__(self, tls: PeerTls | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> control_pb2_grpc.AgentControlStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self._tls)
        return control_pb2_grpc.AgentControlStub(channel)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace=None)
