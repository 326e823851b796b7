"""``netmigrate agent``: run the NetMigrate agent of one Redis instance."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import redis.exceptions

from netmigrate import gc_policy
from netmigrate.agent.channel import ControlTls
from netmigrate.agent.config import (
    AgentConfig,
    ConfigError,
    TlsFiles,
    parse_host_port,
    parse_redis_url,
    parse_slots,
    resolve_password,
)
from netmigrate.agent.redis_node import RedisNodeError
from netmigrate.agent.slot_store import AgentStateError

log = logging.getLogger("netmigrate.agent")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis",
        required=True,
        metavar="URL",
        help="the local Redis: redis://[USER[:PASSWORD]@]HOST:PORT, rediss://..., unix:///PATH "
        "(must run with cluster-enabled yes)",
    )
    p.add_argument(
        "--redis-password-file",
        metavar="FILE",
        help="read the Redis password from FILE (else the URL, else $NETMIGRATE_REDIS_PASSWORD)",
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="UDP data address")
    p.add_argument("--keyspace", required=True, type=int, metavar="ID", help="keyspace id")
    p.add_argument("--server-id", required=True, type=int, metavar="N", help="1..254")
    p.add_argument(
        "--slots",
        default="all",
        metavar="0-16383|none|RANGES",
        help="slots owned when this Redis has no persisted ownership yet (default: all); "
        "persisted ownership wins after a restart",
    )
    p.add_argument("--control", metavar="HOST:PORT", help="serve the gRPC control API here")
    p.add_argument("--control-tls-cert", metavar="PEM", help="TLS certificate of --control")
    p.add_argument("--control-tls-key", metavar="PEM", help="TLS private key of --control")
    p.add_argument(
        "--control-tls-client-ca", metavar="PEM", help="require client certificates from this CA"
    )
    p.add_argument(
        "--service",
        metavar="HOST:PORT",
        help="the keyspace's service address on the switch, where this agent sends SLOT_START "
        "and SLOT_COMPLETE when it migrates slots away (a StartMigration request may name it "
        "instead)",
    )
    p.add_argument(
        "--advertise-control",
        metavar="HOST:PORT",
        help="how other agents reach --control (default: its address, unless that is a "
        "wildcard); the controller may also say it per migration",
    )
    p.add_argument(
        "--peer-tls-ca",
        metavar="PEM",
        help="talk TLS to other agents' control services, verifying them with this CA "
        "(with --control-tls-cert/key as this agent's client certificate)",
    )
    p.add_argument(
        "--peer-tls-server-name",
        metavar="NAME",
        help="name expected in peer certificates (default: the host of the peer's address)",
    )
    p.add_argument(
        "--hold-limit",
        type=int,
        default=10_000,
        metavar="N",
        help="migration target: most client requests held while waiting for the source's "
        "request ids (beyond: BUSY)",
    )
    p.add_argument(
        "--hold-timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="migration target: a held request is answered BUSY after this long",
    )
    p.add_argument(
        "--copy-batch-bytes",
        type=int,
        default=AgentConfig.copy_batch_bytes,
        metavar="BYTES",
        help="migration source: DUMP payloads per copy message",
    )
    p.add_argument(
        "--copy-chunk-bytes",
        type=int,
        default=AgentConfig.copy_chunk_bytes,
        metavar="BYTES",
        help="migration source: a key bigger than this moves in pieces of about this size "
        "(never one DUMP / RESTORE, which would stall Redis' clients)",
    )
    p.add_argument(
        "--max-datagram",
        type=int,
        default=None,
        metavar="N",
        help="largest request/reply in bytes, the keyspace's setting (default: the MTU of the "
        "route to --service, else of the listen address's interface, minus 28 IPv4 + UDP)",
    )
    p.add_argument("--max-batch", type=int, default=512, help="most requests per Redis pipeline")
    p.add_argument("--dedup-entries", type=int, default=262_144, help="request ids remembered")
    p.add_argument("--dedup-bytes", type=int, default=64 << 20, help="reply bytes remembered")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run on uvloop when it is installed (default: yes)",
    )


def build_config(args: argparse.Namespace) -> AgentConfig:
    target = resolve_password(parse_redis_url(args.redis), args.redis_password_file)
    tls = None
    if args.control_tls_cert or args.control_tls_key:
        if not (args.control_tls_cert and args.control_tls_key):
            raise ConfigError("--control-tls-cert and --control-tls-key go together")
        for name in ("control_tls_cert", "control_tls_key", "control_tls_client_ca"):
            path = getattr(args, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: no such file {path}")
        tls = TlsFiles(
            cert=Path(args.control_tls_cert),
            key=Path(args.control_tls_key),
            client_ca=Path(args.control_tls_client_ca) if args.control_tls_client_ca else None,
        )
    elif args.control_tls_client_ca:
        raise ConfigError("--control-tls-client-ca needs --control-tls-cert and --control-tls-key")
    if tls and not args.control:
        raise ConfigError("TLS options given without --control")
    peer_tls = None
    if args.peer_tls_ca:
        if not Path(args.peer_tls_ca).is_file():
            raise ConfigError(f"--peer-tls-ca: no such file {args.peer_tls_ca}")
        peer_tls = ControlTls(
            ca=Path(args.peer_tls_ca),
            cert=tls.cert if tls else None,
            key=tls.key if tls else None,
            server_name=args.peer_tls_server_name or "",
        )
    elif args.peer_tls_server_name:
        raise ConfigError("--peer-tls-server-name needs --peer-tls-ca")
    if args.advertise_control:
        parse_host_port(args.advertise_control, "--advertise-control")
    dedup_entries = args.dedup_entries
    return AgentConfig(
        redis=target,
        listen=parse_host_port(args.listen, "--listen"),
        keyspace=args.keyspace,
        server_id=args.server_id,
        initial_slots=parse_slots(args.slots),
        control=parse_host_port(args.control, "--control") if args.control else None,
        control_tls=tls,
        max_datagram=args.max_datagram,
        max_batch=args.max_batch,
        dedup_entries=dedup_entries,
        dedup_per_client=min(dedup_entries, 65_536),
        dedup_bytes=args.dedup_bytes,
        service=parse_host_port(args.service, "--service") if args.service else None,
        peer_tls=peer_tls,
        advertise_control=args.advertise_control,
        hold_limit=args.hold_limit,
        hold_timeout=args.hold_timeout,
        copy_batch_bytes=args.copy_batch_bytes,
        copy_chunk_bytes=args.copy_chunk_bytes,
    )


async def serve(config: AgentConfig) -> int:
    from netmigrate.agent.app import Agent

    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    # The dedup window keeps hundreds of thousands of small objects alive, and every request
    # allocates a few: with the default thresholds the cyclic GC rescans them constantly (it
    # showed up as ~5% of the agent's CPU). Freeze what startup made and collect less often.
    gc_policy.settle()
    # One line on stdout that supervisors and tests can wait for.
    host, port = agent.address or ("", 0)
    control = f" control={agent.control_port}" if agent.control_port else ""
    print(f"READY udp={host}:{port}{control}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await agent.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = build_config(args)
    except ConfigError as e:
        print(f"netmigrate agent: {e}", file=sys.stderr)
        return 2
    loop_factory = None
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            log.debug("uvloop is not installed: using the default event loop")
        else:
            loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(config))
    except (RedisNodeError, AgentStateError, PermissionError) as e:
        log.error("%s", e)
        return 1
    except redis.exceptions.RedisError as e:
        log.error("Redis %s: %s", config.redis.display(), e)
        return 1
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
