"""``netmigrate agent-stats``: print an agent's counters and slots (gRPC control API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from netmigrate.agent.channel import (
    AgentControlStub,
    ControlTls,
    control_pb2,
    open_channel,
    tls_from_files,
)
from netmigrate.agent.config import ConfigError, parse_host_port
from netmigrate.agent.control import format_address
from netmigrate.protocol.slotset import format_ranges


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, metavar="HOST:PORT", help="agent's --control")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--all", action="store_true", help="also print counters that are zero")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting this CA")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="client private key (mutual TLS)")
    p.add_argument("--tls-server-name", metavar="NAME", help="expected name in the server cert")


def _tls(args: argparse.Namespace) -> ControlTls | None:
    try:
        return tls_from_files(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


async def _fetch(target: str, tls: ControlTls | None, timeout: float) -> tuple[Any, Any]:
    async with open_channel(target, tls) as channel:
        stub = AgentControlStub(channel)
        stats = await stub.GetStats(control_pb2.GetStatsRequest(), timeout=timeout)
        slots = await stub.GetSlots(control_pb2.GetSlotsRequest(), timeout=timeout)
    return stats, slots


def fetch(args: argparse.Namespace) -> tuple[Any, Any]:
    host, port = parse_host_port(args.control, "--control")
    return asyncio.run(_fetch(format_address(host, port), _tls(args), args.timeout))


def render(stats: Any, slots: Any, show_all: bool) -> str:
    a = stats.agent
    owned = [(r.start, r.end) for r in slots.owned]
    lines = [
        f"agent keyspace {a.keyspace} server {a.server_id} at {a.listen} "
        f"(Redis {a.redis}, netmigrate {a.version}, up {a.uptime_seconds:.0f} s)",
        f"slots owned: {slots.owned_count} ({format_ranges(owned)})",
    ]
    for title, table in (
        ("requests", stats.requests),
        ("replies", stats.replies),
        ("counters", stats.counters),
    ):
        rows = sorted((k, v) for k, v in table.items() if v or show_all)
        lines.append(f"{title}:" + ("" if rows else " none"))
        lines += [f"  {k:<20} {v:>14,}" for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        stats, slots = fetch(args)
    except ConfigError as e:
        print(f"netmigrate agent-stats: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"netmigrate agent-stats: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(
            f"netmigrate agent-stats: {args.control}: {e.code().name}: {e.details()}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        out = {
            "stats": MessageToDict(stats, always_print_fields_with_no_presence=True),
            "slots": MessageToDict(slots, always_print_fields_with_no_presence=True),
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(render(stats, slots, args.all))
    return 0
