"""The gateway's TCP server: pipelined requests of a connection in flight together, replies in
the order the requests came, as Redis answers them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from netmigrate.gateway.session import Session
from netmigrate.rediscmd.resp import Error, ProtocolError, RequestReader, encode

log = logging.getLogger(__name__)

#: Requests of one connection in flight at most; reading pauses beyond it (back-pressure).
MAX_IN_FLIGHT = 1024


class Connection(asyncio.Protocol):
    def __init__(self, session: Session, registry: set[Connection]) -> None:
        self.session = session
        self._registry = registry
        self._reader = RequestReader()
        self._replies: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue()
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.Task[None] | None = None
        self._paused = False
        self._in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._writer = asyncio.get_running_loop().create_task(self._write_replies())

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        loop = asyncio.get_running_loop()
        try:
            for args in reader.commands():
                self._in_flight += 1
                self._replies.put_nowait(loop.create_task(self.session.execute(args)))
                if self.session.closing:
                    self._stop_reading()
                    return
        except ProtocolError as e:
            done = loop.create_future()
            done.set_result(encode(Error(f"ERR {e}")))
            self._replies.put_nowait(done)
            self.session.state.closing = True
            self._stop_reading()
            return
        if self._in_flight >= MAX_IN_FLIGHT and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _stop_reading(self) -> None:
        self._replies.put_nowait(None)  # the writer closes after what is queued
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    async def _write_replies(self) -> None:
        transport = self._transport
        assert transport is not None
        while True:
            fut = await self._replies.get()
            if fut is None:
                break
            try:
                reply = await fut
            except Exception as e:  # a bug must not kill the connection silently
                log.exception("gateway: a request failed")
                reply = encode(Error(f"ERR internal error: {type(e).__name__}"))
            self._in_flight -= 1
            if transport.is_closing():
                return
            transport.write(reply)
            if self._paused and self._in_flight < MAX_IN_FLIGHT // 2 and not self.session.closing:
                self._paused = False
                transport.resume_reading()
        transport.close()

    def eof_received(self) -> bool | None:
        self._replies.put_nowait(None)  # answer what was asked, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        if self._writer is not None:
            self._writer.cancel()


@contextlib.asynccontextmanager
async def running(
    session_factory: Callable[[], Session], host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[asyncio.AbstractServer]:
    """Listen on ``host:port`` (each connection gets a new session) until the block ends; then
    stop listening and close every connection."""
    loop = asyncio.get_running_loop()
    connections: set[Connection] = set()

    def connect() -> Connection:
        conn = Connection(session_factory(), connections)
        connections.add(conn)
        return conn

    server = await loop.create_server(connect, host, port)
    try:
        yield server
    finally:
        server.close()
        for conn in list(connections):
            conn.abort()
        await server.wait_closed()
