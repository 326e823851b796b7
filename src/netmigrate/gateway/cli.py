"""``netmigrate gateway``: a local RESP server for unmodified Redis clients, speaking NetMigrate
to one keyspace through the switch.

Secrets never come on the command line: the users file holds SHA-256 hashes of the passwords
(``user NAME #SHA256HEX``, see ``gateway.acl``); without one the gateway refuses to start unless
``--no-auth`` says that every local connection may use it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from netmigrate.addresses import AddressError, parse_host_port
from netmigrate.client.aio import AsyncClient
from netmigrate.client.cli import add_client_options, client_options
from netmigrate.gateway.acl import Acl, AclError
from netmigrate.gateway.keyspace import ClientKeyspace
from netmigrate.gateway.scripts import Scripts
from netmigrate.gateway.server import running
from netmigrate.gateway.session import Session
from netmigrate.rediscmd.table import CommandTable

log = logging.getLogger("netmigrate.gateway")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen", default="127.0.0.1:6379", metavar="HOST:PORT", help="RESP listen address"
    )
    p.add_argument(
        "--to", required=True, metavar="HOST:PORT", help="the keyspace's service address"
    )
    p.add_argument("--keyspace", required=True, type=int, metavar="ID", help="keyspace id")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument(
        "--users", type=Path, metavar="FILE", help="users file: lines 'user NAME #SHA256HEX'"
    )
    auth.add_argument(
        "--no-auth", action="store_true", help="no authentication (every connection is 'default')"
    )
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a server's agent (its data address); repeat for every server of the keyspace. "
        "Keyspace-wide commands (KEYS, SCAN, DBSIZE, FLUSHALL, CONFIG GET/SET ...) go to each "
        "of them directly; without any they are refused",
    )
    add_client_options(p, timeout=0.25)
    p.add_argument(
        "--command-table",
        type=Path,
        metavar="FILE",
        help="Redis' command table as JSON (default: the one shipped, from Redis 7.0)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level")
    p.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run on uvloop when it is installed (default: yes)",
    )


async def serve(args: argparse.Namespace, acl: Acl, table: CommandTable) -> None:
    host, port = parse_host_port(args.listen, "--listen")
    address = parse_host_port(args.to, "--to")
    servers = [parse_host_port(a, "--server") for a in args.server]
    client = AsyncClient(
        address,
        args.keyspace,
        command_table=table,
        **client_options(args),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with client:
        keyspace = ClientKeyspace(client, servers)
        scripts = Scripts()  # every connection's, as a Redis server's script cache is
        session = functools.partial(Session, keyspace, table, acl, scripts=scripts)
        async with running(session, host, port) as server:
            bound = server.sockets[0].getsockname()
            log.info(
                "gateway listening on %s:%d for keyspace %d at %s:%d (%s)",
                bound[0],
                bound[1],
                args.keyspace,
                *address,
                "no auth" if acl.open else f"{len(acl.users)} user(s)",
            )
            await stop.wait()
    log.info("gateway stopped")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        acl = Acl.no_auth() if args.no_auth else Acl.from_file(args.users)
        table = (
            CommandTable.from_json(args.command_table.read_text())
            if args.command_table
            else CommandTable.shipped()
        )
        with asyncio.Runner(loop_factory=_loop_factory(args.uvloop)) as runner:
            runner.run(serve(args, acl, table))
    except (AclError, AddressError, OSError, ValueError) as e:
        print(f"netmigrate gateway: {e}", file=sys.stderr)
        return 2
    return 0


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop's socket calls and transports cost less per request than asyncio's own loop.
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        log.debug("uvloop is not installed: using the default event loop")
        return None
    return uvloop.new_event_loop
