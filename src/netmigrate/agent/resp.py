"""A pipelined RESP2 connection to Redis: raw bytes out, hiredis' parser in.

The data path writes a whole batch of commands with one ``write`` and Redis answers them in
order on the same connection, so a FIFO of callbacks is all the matching needed, and per-key
order is the order of the writes. This avoids redis-py's per-command objects on the hot path;
redis-py is still used for the agent's control-plane calls.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import hiredis

from netmigrate.agent.config import RedisTarget

#: ``callback(reply, context)``; reply is the parsed value, a ``hiredis.ReplyError`` or, when
#: the connection died first, a :class:`ConnectionLost`.
Callback = Callable[[Any, Any], None]
ReplyError = hiredis.ReplyError
log = logging.getLogger(__name__)


class ConnectionLost(ConnectionError):
    """The command's outcome is unknown: the connection closed before its reply."""


def command(*args: bytes | str | int) -> bytes:
    """One RESP2 command (array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


def command_of(args: Sequence[bytes]) -> bytes:
    """:func:`command` for arguments that are bytes already (hot paths: one format per
    argument, no conversions)."""
    return b"*%d\r\n%b" % (len(args), b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args]))


#: A reply callback and its context, as :meth:`RespConnection.send` takes them.
ReplyCallback = tuple[Callable[[Any, int], None], int]


def collect_replies(n: int) -> tuple[list[ReplyCallback], asyncio.Future[list[Any]]]:
    """Callbacks for ``n`` queued commands (as :meth:`RespConnection.send` takes them) and a
    future of their replies, in order, set once the last one arrived (at once for none)."""
    replies: list[Any] = [None] * n
    left = [n]
    done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def on_reply(reply: Any, i: int) -> None:
        replies[i] = reply
        left[0] -= 1
        if not left[0] and not done.done():
            done.set_result(replies)

    if not n:
        done.set_result(replies)
    return [(on_reply, i) for i in range(n)], done


class RespConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[Callback, Any]] = deque()
        self._transport: asyncio.WriteTransport | None = None
        #: True from connect until the connection is lost or closed (a plain attribute: the
        #: data path reads it for every request).
        self.is_open = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, target: RedisTarget, *, name: str = "netmigrate-agent", timeout: float = 5.0
    ) -> RespConnection:
        """Connect, authenticate and name the connection. Errors never include the password."""
        loop = asyncio.get_running_loop()
        if target.unix_path:
            coro = loop.create_unix_connection(cls, target.unix_path)
        else:
            tls = ssl.create_default_context() if target.tls else None
            coro = loop.create_connection(cls, target.host, target.port, ssl=tls)
        _, conn = await asyncio.wait_for(coro, timeout)
        try:
            if target.password is not None:
                auth: tuple[str, ...] = (target.password,)
                if target.username:
                    auth = (target.username, target.password)
                reply = await asyncio.wait_for(conn.call("AUTH", *auth), timeout)
                if isinstance(reply, ReplyError):
                    raise PermissionError(f"Redis refused the credentials: {reply}")
            for args in (("CLIENT", "SETNAME", name), ("PING",)):
                reply = await asyncio.wait_for(conn.call(*args), timeout)
                if isinstance(reply, ReplyError):
                    raise ConnectionError(f"Redis refused {args[0]}: {reply}")
        except BaseException:
            conn.close()
            raise
        return conn

    # -- use -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def send(self, payload: bytes, callbacks: Iterable[tuple[Callback, Any]]) -> None:
        """Write ``payload`` (one or more commands); one callback per command, in order."""
        if not self.is_open:
            for cb, ctx in callbacks:
                cb(ConnectionLost("not connected to Redis"), ctx)
            return
        self._waiting.extend(callbacks)
        self._transport.write(payload)  # type: ignore[union-attr]

    async def call(self, *args: bytes | str | int) -> Any:
        """One command and its reply (for rare, non-hot-path calls)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(reply: Any, _: Any) -> None:
            if not fut.done():
                fut.set_result(reply)

        self.send(command(*args), ((done, None),))
        reply = await fut
        if isinstance(reply, ConnectionLost):
            raise reply
        return reply

    async def calls(self, payload: bytes, n: int) -> list[Any]:
        """Send ``n`` commands (``payload``) and wait for all their replies, in order (errors
        are returned as values: ``ReplyError``, or ``ConnectionLost``)."""
        if not n:
            return []
        callbacks, replies = collect_replies(n)
        self.send(payload, callbacks)
        return await replies

    def close(self) -> None:
        self.is_open = False
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.is_open = True

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            cb, ctx = waiting.popleft()
            try:
                cb(reply, ctx)
            except Exception:  # one failing callback must not stall the replies behind it
                log.exception("error handling a Redis reply")

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        waiting, self._waiting = self._waiting, deque()
        lost = ConnectionLost(f"connection to Redis lost: {exc or 'closed'}")
        for cb, ctx in waiting:
            try:
                cb(lost, ctx)
            except Exception:
                log.exception("error failing a Redis command")
        if not self.closed.done():
            self.closed.set_result(None)
