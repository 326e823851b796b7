"""The agent's configuration: parsed, validated, and safe to log."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from netmigrate import addresses
from netmigrate.agent.channel import MAX_MESSAGE, ControlTls
from netmigrate.protocol import slotset
from netmigrate.protocol.constants import MAX_SERVER_ID, MIN_DATAGRAM, SLOT_COUNT, UDP_MAX_PAYLOAD
from netmigrate.protocol.path_mtu import (
    datagram_limit,
    interface_mtu,
    interface_of,
    route_datagram_limit,
    smallest_interface_mtu,
)

PASSWORD_ENV = "NETMIGRATE_REDIS_PASSWORD"
#: Largest UDP payload over IPv4: the agent reads whole datagrams up to this size.
_DEFAULT_REDIS_PORT = 6379


class ConfigError(ValueError):
    """A bad command-line value; the message says which and why."""


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to reach the local Redis. ``password`` is never part of ``repr``."""

    host: str = "127.0.0.1"
    port: int = _DEFAULT_REDIS_PORT
    unix_path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def display(self) -> str:
        """The target as a URL with the password masked: the only form that may be logged."""
        user = quote(self.username, safe="") if self.username else ""
        auth = ""
        if user or self.password:
            auth = f"{user}{':***' if self.password else ''}@"
        if self.unix_path:
            return f"unix://{auth}{self.unix_path}"
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


def parse_redis_url(url: str) -> RedisTarget:
    """``redis://[user[:password]@]host[:port][/0]``, ``rediss://...`` or ``unix:///path``.

    Redis Cluster mode only has database 0, so any other database number is refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"--redis: unsupported scheme {parts.scheme!r} (redis, rediss, unix)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    for pair in filter(None, parts.query.split("&")):
        name, _, value = pair.partition("=")
        if name == "db":
            db = value
        else:
            raise ConfigError(f"--redis: unsupported URL parameter {name!r}")
    if db not in ("", "0"):
        raise ConfigError("--redis: a cluster-mode Redis only has database 0")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError("--redis: unix:// URL without a socket path")
        return RedisTarget(unix_path=parts.path, username=username, password=password)
    try:
        port = parts.port or _DEFAULT_REDIS_PORT
    except ValueError as e:
        raise ConfigError(f"--redis: {e}") from None
    return RedisTarget(
        host=parts.hostname or "127.0.0.1",
        port=port,
        username=username,
        password=password,
        tls=parts.scheme == "rediss",
    )


def resolve_password(
    target: RedisTarget, password_file: str | None, environ: dict[str, str] | None = None
) -> RedisTarget:
    """Fill in the password from ``--redis-password-file`` or the environment.

    A password in the URL and a password file at once is refused: which one wins would be a
    guess. The environment is the fallback when neither gives one.
    """
    env = os.environ if environ is None else environ
    if password_file is not None:
        if target.password is not None:
            raise ConfigError("the Redis password is given twice (URL and --redis-password-file)")
        try:
            secret = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(
                f"--redis-password-file: cannot read {password_file}: {e.strerror}"
            ) from None
        if not secret:
            raise ConfigError(f"--redis-password-file: {password_file} is empty")
        return _with_password(target, secret)
    if target.password is None and env.get(PASSWORD_ENV):
        return _with_password(target, env[PASSWORD_ENV])
    return target


def _with_password(target: RedisTarget, password: str) -> RedisTarget:
    return RedisTarget(
        host=target.host,
        port=target.port,
        unix_path=target.unix_path,
        username=target.username,
        password=password,
        tls=target.tls,
    )


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (:func:`netmigrate.addresses.parse_host_port`), as a
    ConfigError."""
    try:
        return addresses.parse_host_port(text, what)
    except addresses.AddressError as e:
        raise ConfigError(str(e)) from None


def parse_slots(text: str) -> frozenset[int]:
    """``none``, ``all``, or comma-separated slots and inclusive ranges: ``0-99,200,300-400``."""
    try:
        return slotset.parse(text)
    except slotset.SlotSetError as exc:
        raise ConfigError(f"--slots: {exc}") from None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the control service's TLS: server cert and key, optional client CA."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class AgentConfig:
    redis: RedisTarget
    listen: tuple[str, int]
    keyspace: int
    server_id: int
    #: Ownership to start with when the agent's Redis has none persisted yet.
    initial_slots: frozenset[int] = frozenset(range(SLOT_COUNT))
    control: tuple[str, int] | None = None
    control_tls: TlsFiles | None = None
    #: Largest request/reply in bytes: the keyspace's setting, the same for its agents and
    #: clients. None: derived from this host's MTU (default_max_datagram) when the agent starts.
    max_datagram: int | None = None
    #: Dedup window bounds: request ids remembered in total and per client, reply bytes kept.
    dedup_entries: int = 262_144
    dedup_per_client: int = 65_536
    dedup_bytes: int = 64 << 20
    #: Most datagrams read per wakeup, i.e. per Redis pipeline.
    max_batch: int = 512
    #: The keyspace's service address (on the switch): where SLOT_START / SLOT_COMPLETE go
    #: when StartMigration names none.
    service: tuple[str, int] | None = None
    #: TLS towards peer agents (None: plain gRPC).
    peer_tls: ControlTls | None = None
    #: How this agent's control service is reached by peers (default: its bound address).
    advertise_control: str | None = None
    #: Migration target: most client requests held at once while waiting for the source's
    #: request ids, and how long one may wait before it is answered BUSY.
    hold_limit: int = 10_000
    hold_timeout: float = 1.0
    #: Migration source: DUMP payloads per copy message, in bytes (besides the key count of
    #: the migration's batch), and the size from which a key is not DUMPed in one command but
    #: read and sent in pieces of about this many bytes (a DUMP or RESTORE of a big key would
    #: stall every client of that Redis for its whole duration).
    copy_batch_bytes: int = 4 << 20
    copy_chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not 0 <= self.keyspace <= 0xFFFF:
            raise ConfigError(f"--keyspace {self.keyspace} out of range 0..65535")
        if not 1 <= self.server_id <= MAX_SERVER_ID:
            raise ConfigError(f"--server-id {self.server_id} out of range 1..{MAX_SERVER_ID}")
        if self.max_datagram is not None and not (
            MIN_DATAGRAM <= self.max_datagram <= UDP_MAX_PAYLOAD
        ):
            raise ConfigError(
                f"--max-datagram {self.max_datagram} out of range {MIN_DATAGRAM}..{UDP_MAX_PAYLOAD}"
            )
        if self.dedup_entries < 1 or self.dedup_per_client < 1 or self.dedup_bytes < 1:
            raise ConfigError("dedup window bounds must be positive")
        if self.max_batch < 1:
            raise ConfigError("--max-batch must be positive")
        if self.hold_limit < 1 or self.hold_timeout <= 0:
            raise ConfigError("--hold-limit and --hold-timeout must be positive")
        if not 1024 <= self.copy_chunk_bytes <= self.copy_batch_bytes <= MAX_MESSAGE // 4:
            raise ConfigError(
                "copy sizes must satisfy 1024 <= --copy-chunk-bytes <= --copy-batch-bytes"
                f" <= {MAX_MESSAGE // 4}"
            )


def default_max_datagram(config: AgentConfig) -> tuple[int, str]:
    """The largest datagram this agent's own link carries unfragmented, and where it came from.

    The route towards the keyspace's service address (on the switch) is the one replies take;
    without one, the interface holding the listen address; listening on every address, the
    smallest MTU of this host's interfaces, so no reply is larger than any of its links.
    A client whose link is smaller than the agent's needs the keyspace setting on both.
    """
    try:
        if config.service is not None:
            host = config.service[0]
            return route_datagram_limit(host), f"route to the service {host}"
        host = config.listen[0]
        if host not in ("", "0.0.0.0", "::"):
            name = interface_of(host)
            if name is not None:
                return datagram_limit(interface_mtu(name)), f"interface {name} of {host}"
        return datagram_limit(smallest_interface_mtu()), "smallest interface MTU"
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot derive --max-datagram ({e}): set it explicitly") from None
