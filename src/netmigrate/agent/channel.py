"""The gRPC channel to an agent's control service: the one place it is built.

Every client of the control API uses it: agents towards their migration peers
(:mod:`netmigrate.agent.peers`), ``netmigrate agent-stats``, the migration controller
(:mod:`netmigrate.migration.agents`) and, through the controller, the collection's modules.
It lives in the agent package, beside the service it reaches (:mod:`netmigrate.agent.control`),
and imports nothing of the agent but the generated stubs, so a controller host that imports it
pulls in no Redis or datapath code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE",
    "AgentControlStub",
    "ControlTls",
    "control_pb2",
    "credentials",
    "open_channel",
    "tls_from_files",
]

AgentControlStub = control_pb2_grpc.AgentControlStub

#: Messages of a copy batch can be large (batch x value size): allow 64 MiB, both ways.
MAX_MESSAGE = 64 << 20
#: Seconds a control call may take unless its caller knows better.
DEFAULT_TIMEOUT = 10.0

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # Notice a dead agent within seconds even on an idle stream (the control server allows
    # pings this often: agent/control.py).
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's default reconnect backoff grows to minutes: an agent restarted during a
    # migration would stay "UNAVAILABLE" to a long-lived channel long after it is back.
    # (Not grpc.min_reconnect_backoff_ms: gRPC core also takes it as the connect timeout, and
    # 100 ms fails fresh channels of a busy event loop before the HTTP/2 handshake is done.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class ControlTls:
    """TLS towards an agent's control service: ``ca`` verifies the agent's certificate;
    ``cert`` / ``key`` answer an agent that requires client certificates (the controller's,
    or a source agent's own control certificate towards its migration peer)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    #: Name expected in the agent's certificate when it differs from the address' host.
    server_name: str = ""


def tls_from_files(
    ca: str | Path | None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    server_name: str | None = None,
    *,
    flags: tuple[str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key"),
) -> ControlTls | None:
    """:class:`ControlTls` from file names as a command line or a module gets them (None
    without ``ca``); ValueError naming ``flags`` when they do not go together."""
    ca_flag, cert_flag, key_flag = flags
    if not ca:
        if cert or key:
            raise ValueError(f"{cert_flag}/{key_flag} need {ca_flag}")
        return None
    if bool(cert) != bool(key):
        raise ValueError(f"{cert_flag} and {key_flag} go together")
    return ControlTls(
        Path(ca),
        Path(cert) if cert else None,
        Path(key) if key else None,
        server_name or "",
    )


def credentials(tls: ControlTls) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca), private_key=read(tls.key), certificate_chain=read(tls.cert)
    )


def open_channel(address: str, tls: ControlTls | None = None) -> grpc.aio.Channel:
    """An asyncio channel to the control service at ``address`` (HOST:PORT): plain gRPC
    without ``tls``. Connects lazily; the caller closes it."""
    options = list(CHANNEL_OPTIONS)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, credentials(tls), options=options)
