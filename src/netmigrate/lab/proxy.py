"""A TCP forwarder from the root namespace into a lab namespace.

The agents' gRPC control services listen inside their namespaces (other agents reach them
through the switch); a controller in the root namespace — pytest, ``netmigrate migrate``,
Ansible on the lab host — cannot route to 10.0.0.0/24. This process listens on
``127.0.0.1:PORT`` of the root namespace, then joins the lab namespace (setns moves the whole
single-threaded process, while the listening socket stays where it was created), so every
connection it opens towards the agent is made inside the namespace.

    python -m netmigrate.lab.proxy --netns nm-redis1 --map 127.0.0.1:17001=127.0.0.1:7000

Several ``--map LISTEN=CONNECT`` may be given (one process, many forwards). Without
``--netns`` the process stays where it was started (the lab also uses this inside each Redis
namespace, so that ``127.0.0.1:<base + n>`` names agent ``n``'s control service everywhere:
the controller's address for an agent is then also the one its peers can use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

from netmigrate.netns import enter_netns

_BUF = 1 << 16


def _split(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"invalid address {addr!r}: want HOST:PORT")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUF):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(maps: list[tuple[socket.socket, tuple[str, int]]]) -> None:
    servers = [await _forward(listener, target) for listener, target in maps]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


async def _forward(listener: socket.socket, target: tuple[str, int]) -> asyncio.Server:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(*target)
        except OSError:
            cw.close()
            return
        with contextlib.suppress(Exception):
            await asyncio.gather(_pipe(cr, tw), _pipe(tr, cw))
        for w in (cw, tw):
            w.close()

    return await asyncio.start_server(handle, sock=listener)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netmigrate.lab.proxy", description=__doc__)
    p.add_argument("--netns", help="the namespace to connect from (default: this one)")
    p.add_argument(
        "--map", action="append", required=True, metavar="LISTEN=CONNECT",
        help="HOST:PORT here = HOST:PORT (inside --netns); repeatable",
    )  # fmt: skip
    args = p.parse_args(argv)
    maps = []
    for item in args.map:
        listen, sep, connect = item.partition("=")
        if not sep:
            raise SystemExit(f"invalid --map {item!r}: want LISTEN=CONNECT")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(_split(listen))
        listener.listen(128)
        listener.setblocking(False)
        maps.append((listener, _split(connect)))
    if args.netns:
        try:
            enter_netns(args.netns)
        except OSError as exc:
            print(f"proxy: {exc}", file=sys.stderr)
            return 1
    asyncio.run(_serve(maps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
