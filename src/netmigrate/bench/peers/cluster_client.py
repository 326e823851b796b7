"""A lean Redis Cluster client for the load generator of ``redis-cluster-tuned``.

redis-py's cluster client spends ~69 µs of CPU per operation, so under the benchmark's per-role
budgets (client 0.8 core, each Redis host 0.25) its load generator saturated its own budget
while the source node still had headroom: Redis Cluster met its migration bounded by its
client, NetMigrate (whose client costs ~18 µs per request) by its source. This client costs
~6 µs per operation (``netmigrate bench cluster-client``), so the client budget is spent
mostly on the harness's own per-operation work, the same for every system
(docs/benchmarks.md, "A load generator that does not bound Redis Cluster").

It is a complete cluster client for GET/SET, not a shortcut:

* one connection per node, shared by every worker of the process; requests are pipelined
  (the writes of one event-loop turn leave in one ``send``) and replies are matched to
  requests in FIFO order, which is what RESP guarantees on one connection;
* the slot map comes from ``CLUSTER SLOTS`` of the seed node;
* ``MOVED slot host:port`` rewrites the map for that slot and retries at the new owner;
  ``ASK slot host:port`` sends ``ASKING`` + the command to the named node once, without
  touching the map (the slot is being imported there); ``TRYAGAIN`` (a multi-key command
  during a migration; never for GET/SET, handled for completeness) and a lost connection
  retry after a short backoff;
* every redirection and retry is reported through :class:`~netmigrate.bench.kv.ClientEvents`
  (``MOVED``, ``ASK``, ``TRYAGAIN``, ``RECONNECT``), as redis-py's counting hook does for the
  ``redis-cluster`` peer; any other error reply is raised as redis-py's ``ResponseError``, so
  the runner labels it by its error code exactly as before.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from netmigrate.bench.kv import ASK, MOVED, TRYAGAIN, ClientEvents
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot

#: A retry after a lost connection (the reports count it next to the redirections).
RECONNECT = "RECONNECT"
#: Redirections and retries one command may follow before it fails, as redis-py's
#: ``RedisClusterRequestTTL``.
MAX_ATTEMPTS = 16
#: Backoff before retrying after TRYAGAIN or a lost connection (doubles per attempt).
BACKOFF_S = 0.001
#: Seconds to open a connection to a node.
CONNECT_TIMEOUT_S = 5.0

Address = tuple[str, int]


class ClusterClientError(Exception):
    """A command that still failed after :data:`MAX_ATTEMPTS` redirections or retries."""


def pack(*args: bytes) -> bytes:
    """One RESP command (a multi-bulk of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def _set(key: bytes, value: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)


_ASKING = pack(b"ASKING")


class NodeConnection(asyncio.Protocol):
    """One pipelined connection to one node: requests out in order, replies matched FIFO."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    @classmethod
    async def open(cls, address: Address) -> NodeConnection:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: cls(address), address[0], address[1]),
            CONNECT_TIMEOUT_S,
        )
        return proto

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            fut = waiting.popleft()
            if not fut.done():  # a cancelled caller leaves its reply to be skipped
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        err = RedisConnectionError(f"connection to {self.address[0]}:{self.address[1]} lost")
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(err)

    # -- requests ----------------------------------------------------------------------------
    def submit(self, *commands: bytes) -> list[asyncio.Future[Any]]:
        """Queue ``commands`` back to back (nothing between them); one future per reply.

        The bytes leave at the end of this event-loop turn together with every other
        worker's, so many requests share one ``send``.
        """
        if self.closed:
            raise RedisConnectionError(f"connection to {self.address[0]}:{self.address[1]} lost")
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.extend(commands)
        futs = [self._loop.create_future() for _ in commands]
        self._waiting.extend(futs)
        return futs

    def request(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise RedisConnectionError(f"connection to {self.address[0]}:{self.address[1]} lost")
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(command)
        fut = self._loop.create_future()
        self._waiting.append(fut)
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _redirect_target(message: str) -> tuple[int, Address]:
    """``MOVED 3999 127.0.0.1:6381`` / ``ASK ...`` -> (slot, address)."""
    _, slot, where = message.split(" ", 2)
    host, _, port = where.rpartition(":")
    return int(slot), (host, int(port))


def _asking(conn: NodeConnection, command: bytes) -> asyncio.Future[Any]:
    """``ASKING`` and ``command`` back to back on ``conn``; the future of ``command``'s reply."""
    ok, fut = conn.submit(_ASKING, command)
    # Nobody awaits ASKING's own "+OK"; a lost connection must not log it as unretrieved.
    ok.add_done_callback(_retrieve)
    return fut


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class LeanClusterClient:
    """GET/SET over a Redis Cluster with one pipelined connection per node."""

    def __init__(self, events: ClientEvents, slots: list[Address | None]) -> None:
        self._events = events
        self._slots = slots
        self._conns: dict[Address, NodeConnection] = {}
        self._connecting: dict[Address, asyncio.Future[NodeConnection]] = {}

    @classmethod
    async def connect(cls, events: ClientEvents, seed: Address) -> LeanClusterClient:
        client = cls(events, [None] * SLOT_COUNT)
        await client.refresh_slots(seed)
        return client

    async def refresh_slots(self, seed: Address) -> None:
        """Rebuild the whole slot map from ``CLUSTER SLOTS`` of ``seed``."""
        conn = await self._connection(seed)
        reply = await conn.request(pack(b"CLUSTER", b"SLOTS"))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        slots: list[Address | None] = [None] * SLOT_COUNT
        for entry in reply:
            first, last, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if master[0] else seed[0]
            addr = (host, int(master[1]))
            slots[first : last + 1] = [addr] * (last - first + 1)
        self._slots[:] = slots

    def owner(self, slot: int) -> Address | None:
        """The node this client sends ``slot``'s commands to (its map, not the cluster's)."""
        return self._slots[slot]

    async def _connection(self, addr: Address) -> NodeConnection:
        conn = self._conns.get(addr)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(addr)
        if pending is not None:  # one connection per node, even if many workers ask at once
            return await asyncio.shield(pending)
        fut: asyncio.Future[NodeConnection] = asyncio.get_running_loop().create_future()
        self._connecting[addr] = fut
        try:
            conn = await NodeConnection.open(addr)
        except BaseException as exc:
            fut.set_exception(RedisConnectionError(f"cannot connect to {addr}: {exc}"))
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise RedisConnectionError(f"cannot connect to {addr[0]}:{addr[1]}: {exc}") from exc
        finally:
            self._connecting.pop(addr, None)
        self._conns[addr] = conn
        fut.set_result(conn)
        return conn

    async def execute(self, slot: int, command: bytes) -> Any:
        """``command`` (packed) for a key in ``slot``, following redirections."""
        asking: Address | None = None
        backoff = BACKOFF_S
        events = self._events
        for _ in range(MAX_ATTEMPTS):
            addr = asking or self._slots[slot]
            if addr is None:
                raise ClusterClientError(f"no node serves slot {slot}")
            try:
                conn = self._conns.get(addr)
                if conn is None or conn.closed:
                    conn = await self._connection(addr)
                if asking is None:
                    reply = await conn.request(command)
                else:
                    reply = await _asking(conn, command)
                    asking = None
            except RedisConnectionError:
                events.event(RECONNECT)
                await asyncio.sleep(backoff)
                backoff *= 2
                asking = None
                continue
            if type(reply) is not hiredis.ReplyError:
                return reply
            message = str(reply)
            if message.startswith("MOVED "):
                events.event(MOVED)
                moved_slot, target = _redirect_target(message)
                self._slots[moved_slot] = target
                continue
            if message.startswith("ASK "):
                events.event(ASK)
                asking = _redirect_target(message)[1]
                continue
            if message.startswith("TRYAGAIN"):
                events.event(TRYAGAIN)
                await asyncio.sleep(backoff)
                backoff *= 2
                continue
            raise ResponseError(message)
        raise ClusterClientError(f"slot {slot}: still redirected after {MAX_ATTEMPTS} attempts")

    async def get(self, key: bytes) -> bytes | None:
        # The common case inline: a cached owner with an open connection, a plain reply.
        slot = key_slot(key)
        conn = self._conns.get(self._slots[slot])  # type: ignore[arg-type]
        if conn is not None and not conn.closed:
            try:
                reply = await conn.request(_get(key))
            except RedisConnectionError:
                self._events.event(RECONNECT)
            else:
                if type(reply) is not hiredis.ReplyError:
                    return reply
                return await self._after_error(slot, _get(key), reply)
        return await self.execute(slot, _get(key))

    async def set(self, key: bytes, value: bytes) -> None:
        slot = key_slot(key)
        command = _set(key, value)
        conn = self._conns.get(self._slots[slot])  # type: ignore[arg-type]
        if conn is not None and not conn.closed:
            try:
                reply = await conn.request(command)
            except RedisConnectionError:
                self._events.event(RECONNECT)
            else:
                if type(reply) is not hiredis.ReplyError:
                    return
                await self._after_error(slot, command, reply)
                return
        await self.execute(slot, command)

    async def _after_error(self, slot: int, command: bytes, reply: Any) -> Any:
        """The first attempt got an error reply: count and follow it, then the usual loop."""
        message = str(reply)
        if message.startswith("MOVED "):
            self._events.event(MOVED)
            moved_slot, target = _redirect_target(message)
            self._slots[moved_slot] = target
            return await self.execute(slot, command)
        if message.startswith("ASK "):
            self._events.event(ASK)
            target = _redirect_target(message)[1]
            try:
                conn = await self._connection(target)
                again = await _asking(conn, command)
            except RedisConnectionError:
                self._events.event(RECONNECT)
                return await self.execute(slot, command)
            if type(again) is not hiredis.ReplyError:
                return again
            return await self._after_error(slot, command, again)
        if message.startswith("TRYAGAIN"):
            self._events.event(TRYAGAIN)
            await asyncio.sleep(BACKOFF_S)
            return await self.execute(slot, command)
        raise ResponseError(message)

    async def _many(self, items: Sequence[tuple[int, bytes]]) -> list[Any]:
        """Pipeline ``(slot, command)`` pairs over the nodes; redirected ones retried singly."""
        futs: list[asyncio.Future[Any] | None] = []
        for slot, command in items:
            conn = self._conns.get(self._slots[slot])  # type: ignore[arg-type]
            futs.append(None if conn is None or conn.closed else conn.request(command))
        out: list[Any] = []
        for (slot, command), fut in zip(items, futs, strict=True):
            reply: Any = None
            if fut is not None:
                try:
                    reply = await fut
                except RedisConnectionError:
                    self._events.event(RECONNECT)
                    fut = None
            if fut is None:
                out.append(await self.execute(slot, command))
            elif type(reply) is hiredis.ReplyError:
                out.append(await self._after_error(slot, command, reply))
            else:
                out.append(reply)
        return out

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        await self._many([(key_slot(k), _set(k, v)) for k, v in items])

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self._many([(key_slot(k), _get(k)) for k in keys])

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        await asyncio.sleep(0)  # let the transports finish closing


async def open_lean_client(events: ClientEvents, *, port: int, host: str = "127.0.0.1") -> Any:
    """The lean client seeded with the node at ``port`` (also for load-generator processes)."""
    return await LeanClusterClient.connect(events, (host, port))
