"""The gateway's TCP server: pipelined requests of a connection in flight together, replies in
the order the requests came, as Redis answers them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from netmigrate.gateway.session import Session
from netmigrate.rediscmd.resp import Error, ProtocolError, RequestReader, encode
from netmigrate.rediscmd.table import Classified

log = logging.getLogger(__name__)

#: Requests of one connection in flight at most; reading pauses beyond it (back-pressure).
MAX_IN_FLIGHT = 1024
#: Most commands of one slot batched into one request, and their arguments' bytes at most (a
#: batch that still does not fit a datagram is split by the keyspace).
MAX_BATCH = 64
MAX_BATCH_BYTES = 4096


class _Reply:
    """The place of one request's reply in the connection's answer order."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class _Batch:
    """Commands of one slot of one read from the socket, in the order they came."""

    __slots__ = ("places", "requests", "size")

    def __init__(self) -> None:
        self.requests: list[tuple[Classified, list[bytes]]] = []
        self.places: list[_Reply] = []
        self.size = 0


class Connection(asyncio.Protocol):
    """One client connection. Everything it pipelined in one read is parsed together; the
    commands that go to the keyspace as they are are grouped by slot (in their order) and each
    group is one request, sent before the next read; replies are written in the order the
    requests came, as many together as are ready."""

    def __init__(self, session: Session, registry: set[Connection]) -> None:
        self.session = session
        self._registry = registry
        self._reader = RequestReader()
        self._order: deque[_Reply] = deque()
        self._transport: asyncio.Transport | None = None
        self._paused = False
        #: No more requests are read; close once every reply is written.
        self._closing = False
        #: A request the connection waits for before it runs the next (a blocked command).
        self._held: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._reader.feed(data)
        if self._held is not None:
            return
        session = self.session
        batches: dict[int | None, _Batch] = {}
        try:
            for args in self._reader.commands():
                place = _Reply()
                self._order.append(place)
                request = session.route(args)
                if request is not None:
                    batch = batches.get(request.slot)
                    if batch is None:
                        batch = batches[request.slot] = _Batch()
                    batch.requests.append((request, args))
                    batch.places.append(place)
                    batch.size += sum(map(len, args)) + 8 * len(args)
                    if len(batch.requests) >= MAX_BATCH or batch.size >= MAX_BATCH_BYTES:
                        del batches[request.slot]
                        self._send(batch)
                    continue
                # Whatever the session answers may depend on (or change) what came before:
                # the keyspace gets the batches so far first.
                for batch in batches.values():
                    self._send(batch)
                batches.clear()
                try:
                    reply = session.dispatch(args)
                except Exception as e:  # a bug must not end the connection silently
                    log.exception("gateway: a request failed")
                    reply = encode(Error(f"ERR internal error: {type(e).__name__}"))
                held = self._settle(place, reply)
                if session.holds:
                    session.holds = False
                    if held is not None:
                        self._hold(held)
                        break
                if session.closing:
                    self._stop_reading()
                    break
        except ProtocolError as e:
            place = _Reply()
            place.data = encode(Error(f"ERR {e}"))
            self._order.append(place)
            self.session.state.closing = True
            self._stop_reading()
        for batch in batches.values():
            self._send(batch)
        self._flush()
        if len(self._order) >= MAX_IN_FLIGHT and not self._paused and not self._closing:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _send(self, batch: _Batch) -> None:
        sent = self.session.keyspace.batch(batch.requests, self.session.state.resp)
        places = batch.places
        if asyncio.isfuture(sent):
            sent.add_done_callback(lambda f: self._batch_done(f, places))
        else:
            task = asyncio.ensure_future(sent)
            task.add_done_callback(lambda f: self._batch_done(f, places))

    def _batch_done(self, done: asyncio.Future[list[bytes]], places: list[_Reply]) -> None:
        if done.cancelled():
            return
        e = done.exception()
        if e is not None:
            log.error("gateway: a request failed", exc_info=e)
            replies = [encode(Error(f"ERR internal error: {type(e).__name__}"))] * len(places)
        else:
            replies = done.result()
        for place, reply in zip(places, replies, strict=True):
            place.data = reply
        self._flush()

    def _settle(
        self, place: _Reply, reply: bytes | Awaitable[bytes]
    ) -> asyncio.Future[bytes] | None:
        if isinstance(reply, bytes):
            place.data = reply
            return None
        fut = asyncio.ensure_future(reply)
        fut.add_done_callback(lambda f: self._one_done(f, place))
        return fut

    def _hold(self, held: asyncio.Future[bytes]) -> None:
        """Run nothing more of this connection until ``held`` is answered (Redis does not
        run a blocked client's next commands either); what comes meanwhile is buffered. The
        socket is still read, so that a client that leaves is seen (and its wait ended)."""
        self._held = held
        held.add_done_callback(self._release)

    def _release(self, _: asyncio.Future[bytes]) -> None:
        self._held = None
        if self._transport is None or self._transport.is_closing():
            return
        self.data_received(b"")  # what came while held; resumes reading when all is sent

    def _one_done(self, done: asyncio.Future[bytes], place: _Reply) -> None:
        if done.cancelled():
            return
        e = done.exception()
        if e is not None:
            log.error("gateway: a request failed", exc_info=e)
            place.data = encode(Error(f"ERR internal error: {type(e).__name__}"))
        else:
            place.data = done.result()
        self._flush()

    def _flush(self) -> None:
        """Write every reply that is ready in order; close when asked to and all are out."""
        transport = self._transport
        order = self._order
        if transport is None or transport.is_closing():
            return
        out = []
        while order and order[0].data is not None:
            out.append(order.popleft().data)
        if out:
            transport.write(b"".join(out))  # type: ignore[arg-type]
        if self._closing:
            if not order:
                transport.close()
        elif self._paused and len(order) < MAX_IN_FLIGHT // 2:
            self._paused = False
            transport.resume_reading()

    def _stop_reading(self) -> None:
        self._closing = True
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._held is not None:
            return False  # a blocked client that left is dropped, as Redis drops it
        self._closing = True  # answer what was asked, then close
        self._flush()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        self._order.clear()
        if self._held is not None:
            self._held.cancel()  # a blocked command waits no longer for a gone client

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


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
