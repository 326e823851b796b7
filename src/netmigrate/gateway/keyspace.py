"""The gateway's keyspace: every command one NetMigrate request through the switch, sent by our
client (``netmigrate.client``), which retries, follows migrations and merges double reads.

RESP2 and RESP3: a request says the connection's version and the agent's scripts write the
reply in it (``agent.generic``). Keyspace-wide commands go to every server's agent directly
and are merged here (``gateway.fanout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from netmigrate.client.aio import AsyncClient
from netmigrate.client.errors import (
    CommandRefused,
    NetMigrateError,
    RedisReplyError,
    ServerError,
    Timeout,
    TooLarge,
)
from netmigrate.gateway import fanout
from netmigrate.protocol.constants import Status
from netmigrate.rediscmd.resp import Error, ProtocolError, encode, split_replies
from netmigrate.rediscmd.table import Classified, Kind

T = TypeVar("T")


def _error(message: str) -> bytes:
    return encode(Error(message))


def error_reply(e: NetMigrateError) -> bytes:
    """The RESP error an application gets for a request NetMigrate could not complete.

    Redis' own errors keep their text; NetMigrate's say what happened, so that an application
    can tell a refusal (nothing ran) from an unknown outcome (a timeout: it may have run)."""
    if isinstance(e, RedisReplyError):
        return _error(e.message)
    if isinstance(e, CommandRefused):
        return _error(f"ERR {e}")
    if isinstance(e, ServerError):
        if e.status == Status.CROSSSLOT:
            return _error("CROSSSLOT Keys in request don't hash to the same slot")
        return _error(f"ERR NetMigrate {e.status.name}: {e.message}".rstrip(": "))
    if isinstance(e, Timeout):
        return _error(f"ERR NetMigrate: no answer from the keyspace, outcome unknown ({e})")
    return _error(f"ERR NetMigrate: {e}")


class ClientKeyspace:
    """:class:`~netmigrate.gateway.session.Keyspace` over an open :class:`AsyncClient`.

    A batch of pipelined commands of one slot is one request (one datagram each way, one
    script run at the agent): the per-request costs of every stage (a datagram, a header, a
    request id, a script call) are paid once for the batch instead of once per command."""

    #: RESP versions the replies can be given in (see the module's docstring).
    protocols = frozenset({2, 3})

    def __init__(self, client: AsyncClient, servers: Sequence[tuple[str, int]] = ()) -> None:
        self.client = client
        #: Every server's agent (data address): keyspace-wide commands go to each directly.
        self.servers = list(servers)

    def wide(self, args: Sequence[bytes], resp: int) -> Awaitable[bytes]:
        a = list(args)
        loop = asyncio.get_running_loop()
        if not self.servers:
            return _done(
                loop,
                _error(
                    f"ERR {a[0].decode(errors='replace').upper()} works on the whole keyspace: "
                    "the gateway needs the keyspace's servers (--server) to serve it"
                ),
            )
        try:
            if a[0].lower() == b"scan":
                if len(a) < 2:
                    return _done(loop, _error("ERR wrong number of arguments for 'scan' command"))
                try:
                    index, cursor = fanout.scan_target(a[1], len(self.servers))
                except ValueError:
                    return _done(loop, _error("ERR invalid cursor"))
                part = self.client.keyspace_wide_started(
                    [a[0], b"%d" % cursor, *a[2:]], self.servers[index], write=False
                )
                return _scanned(part, index, len(self.servers), resp)
            write = fanout.writes(a)
            parts = [
                self.client.keyspace_wide_started(a, server, write=write) for server in self.servers
            ]
        except NetMigrateError as e:
            return _done(loop, error_reply(e))
        return _merged(a, parts, resp)

    def batch(
        self, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> asyncio.Future[list[bytes]]:
        reqs = [(c, list(a)) for c, a in requests]
        loop = asyncio.get_running_loop()
        try:
            sent = self.client.pipeline_classified(reqs, resp=resp)
        except TooLarge as e:
            if len(reqs) == 1:
                return _done(loop, [error_reply(e)])
            # The batch does not fit one datagram: its halves may (sent in order).
            half = len(reqs) // 2
            return _joined(loop, self.batch(reqs[:half], resp), self.batch(reqs[half:], resp))
        except NetMigrateError as e:
            return _done(loop, [error_reply(e)] * len(reqs))
        out: asyncio.Future[list[bytes]] = loop.create_future()
        sent.add_done_callback(lambda f: self._answered(f, reqs, out, resp))
        return out

    def _answered(
        self,
        sent: asyncio.Future[bytes],
        reqs: list[tuple[Classified, list[bytes]]],
        out: asyncio.Future[list[bytes]],
        resp: int,
    ) -> None:
        if out.cancelled():
            return
        if sent.cancelled():
            out.cancel()
            return
        e = sent.exception()
        if e is None:
            try:
                out.set_result(split_replies(sent.result(), len(reqs)))
            except (ProtocolError, ValueError) as bad:
                out.set_result([_error(f"ERR NetMigrate: unreadable reply ({bad})")] * len(reqs))
            return
        if not isinstance(e, NetMigrateError):
            out.set_exception(e)
            return
        if (
            len(reqs) > 1
            and isinstance(e, ServerError)
            and e.status == Status.TOO_LARGE
            and all(c.kind is not Kind.WRITE for c, _ in reqs)
        ):
            # Reads changed nothing: each alone may fit (a write batch ran: it must not run
            # twice, so its commands get the error below).
            retry = _joined(asyncio.get_running_loop(), *(self.batch([r], resp) for r in reqs))
            retry.add_done_callback(lambda f: out.done() or out.set_result(f.result()))
            return
        reply = error_reply(e)
        if len(reqs) > 1 and isinstance(e, ServerError) and e.status == Status.TOO_LARGE:
            reply = _error(
                f"ERR NetMigrate: the replies of a pipelined batch of {len(reqs)} commands of "
                f"one slot exceeded one datagram after they ran ({e.message})"
            )
        out.set_result([reply] * len(reqs))

    def transaction(
        self, slot: int, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> Awaitable[bytes]:
        try:
            sent = self.client.transaction_started([(c, list(a)) for c, a in requests], resp=resp)
        except NetMigrateError as e:
            return _done(asyncio.get_running_loop(), error_reply(e))
        return _replied(sent)


async def _scanned(part: Awaitable[bytes], index: int, servers: int, resp: int) -> bytes:
    try:
        return fanout.scan_reply(await part, index, servers, resp)
    except NetMigrateError as e:
        return error_reply(e)


async def _merged(args: list[bytes], parts: list[asyncio.Future[bytes]], resp: int) -> bytes:
    try:
        answers = await asyncio.gather(*parts)
    except NetMigrateError as e:
        for p in parts:
            p.cancel()
        return error_reply(e)
    return fanout.merge(args, answers, resp)


async def _replied(sent: Awaitable[bytes]) -> bytes:
    try:
        return await sent
    except NetMigrateError as e:
        return error_reply(e)


def _done(loop: asyncio.AbstractEventLoop, value: T) -> asyncio.Future[T]:
    f: asyncio.Future[T] = loop.create_future()
    f.set_result(value)
    return f


def _joined(
    loop: asyncio.AbstractEventLoop, *parts: asyncio.Future[list[bytes]]
) -> asyncio.Future[list[bytes]]:
    """One future of the parts' replies in order."""
    out: asyncio.Future[list[bytes]] = loop.create_future()
    left = [len(parts)]

    def one(_: asyncio.Future[list[bytes]]) -> None:
        left[0] -= 1
        if left[0] or out.done():
            return
        replies: list[bytes] = []
        for p in parts:
            if p.cancelled():
                out.cancel()
                return
            replies.extend(p.result())
        out.set_result(replies)

    for p in parts:
        p.add_done_callback(one)
    return out
