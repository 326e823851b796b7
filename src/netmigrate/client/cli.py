"""``netmigrate kv``: send one request to a keyspace and print the result.

Values are printed as they are (bytes to stdout), one per line; a missing key prints
``(nil)``. Errors go to stderr with a non-zero exit status: 1 for an error answer or a
timeout, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from netmigrate.addresses import AddressError, parse_host_port
from netmigrate.client.aio import DEFAULT_DEADLINE
from netmigrate.client.errors import NetMigrateError
from netmigrate.client.sync import Client


def add_client_options(p: argparse.ArgumentParser, *, timeout: float) -> None:
    """The options every command that runs a client takes (kv, bench load, gateway)."""
    p.add_argument("--timeout", type=float, default=timeout, help="seconds per attempt")
    p.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="seconds one request keeps retrying (default %(default)s)",
    )
    p.add_argument("--retries", type=int, help="also cap the resends at this number")
    p.add_argument(
        "--max-datagram",
        type=int,
        metavar="N",
        help="largest request in bytes, the keyspace's setting (default: the MTU of the route "
        "to the service minus 28 IPv4 + UDP)",
    )


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`AsyncClient` keyword arguments from :func:`add_client_options`' options."""
    return {
        "timeout": args.timeout,
        "retries": args.retries,
        "deadline": args.deadline,
        "max_datagram": args.max_datagram,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="keyspace service address")
    p.add_argument("--keyspace", required=True, type=int, metavar="ID", help="keyspace id")
    add_client_options(p, timeout=0.5)
    sub = p.add_subparsers(dest="op", required=True, metavar="OP")
    sub.add_parser("get", help="GET KEY").add_argument("key")
    s = sub.add_parser("set", help="SET KEY VALUE [--ttl-ms N] [--nx|--xx]")
    s.add_argument("key")
    s.add_argument("value")
    s.add_argument("--ttl-ms", type=int, default=0, help="expire after N ms (0: never)")
    cond = s.add_mutually_exclusive_group()
    cond.add_argument("--nx", action="store_true", help="only if the key does not exist")
    cond.add_argument("--xx", action="store_true", help="only if the key exists")
    sub.add_parser("del", help="DEL KEY").add_argument("key")
    i = sub.add_parser("incrby", help="INCRBY KEY DELTA")
    i.add_argument("key")
    i.add_argument("delta", type=int)
    sub.add_parser("mget", help="MGET KEY...").add_argument("keys", nargs="+")
    sub.add_parser("mset", help="MSET KEY VALUE [KEY VALUE ...]").add_argument(
        "pairs", nargs="+", metavar="KEY VALUE"
    )


def _arg_bytes(text: str) -> bytes:
    # Arguments arrive decoded with surrogateescape: this gives back the exact bytes typed.
    return text.encode("utf-8", "surrogateescape")


def _print_value(value: bytes | None) -> None:
    out = sys.stdout.buffer
    out.write(b"(nil)" if value is None else value)
    out.write(b"\n")


def _execute(client: Client, args: argparse.Namespace) -> None:
    key = _arg_bytes(args.key) if hasattr(args, "key") else b""
    result: Any
    if args.op == "get":
        _print_value(client.get(key))
    elif args.op == "set":
        applied = client.set(
            key, _arg_bytes(args.value), ttl_ms=args.ttl_ms, nx=args.nx, xx=args.xx
        )
        print("OK" if applied else "NOT SET (condition not met)")
    elif args.op == "del":
        print(client.delete(key))
    elif args.op == "incrby":
        result = client.incrby(key, args.delta)
        print(result)
    elif args.op == "mget":
        for value in client.mget([_arg_bytes(k) for k in args.keys]):
            _print_value(value)
    elif args.op == "mset":
        raw = [_arg_bytes(x) for x in args.pairs]
        client.mset(list(zip(raw[::2], raw[1::2], strict=True)))
        print("OK")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    if args.op == "mset" and len(args.pairs) % 2:
        print("netmigrate kv: mset needs KEY VALUE pairs", file=sys.stderr)
        return 2
    try:
        address = parse_host_port(args.to, "--to")
        options = client_options(args)
        with Client(address, args.keyspace, **options) as c:
            _execute(c, args)
    except AddressError as e:
        print(f"netmigrate kv: {e}", file=sys.stderr)
        return 2
    except (NetMigrateError, ValueError) as e:
        unknown = " (it may have taken effect)" if getattr(e, "outcome_unknown", False) else ""
        print(f"netmigrate kv: {type(e).__name__}: {e}{unknown}", file=sys.stderr)
        return 1
    return 0
