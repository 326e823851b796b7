"""The asyncio NetMigrate client.

One UDP socket, any number of outstanding requests. Each request gets a request id (a random
32-bit client id | a 32-bit counter from a random start); replies are matched by that id and op
only, so late, duplicate or foreign replies are ignored and never mistaken for another
request's. A request that gets no usable reply within its timeout is sent again with the RETRY
flag and the same id (the agents apply it at most once); WRONG_OWNER, BUSY and MISS answers are
retried after a short backoff, since the switch routes the retry to the right server.

The retry budget is time: a call keeps trying until its ``deadline`` (5 s by default: a slot
transition, which answers WRONG_OWNER / BUSY for a moment, and a switch failover fit in it), not
for a fixed number of attempts that a few lost datagrams during one transition can use up. A
call that fails without knowing whether it took effect raises an error whose
``outcome_unknown`` is True (:class:`~netmigrate.client.errors.OutcomeUnknown`).

Multi-key requests whose keys fall in several slots are split into one request per slot:
``mget`` is then a set of per-slot reads and ``mset`` is atomic per slot only, not across
slots (a failure can leave some slots written and others not).

Any other Redis command goes through :meth:`AsyncClient.execute` (or ``execute_raw`` for
Redis' reply bytes, ``transaction`` for MULTI/EXEC): it is classified from Redis' command table
(the shipped one, or one given), sent as CMD_READ (double-read during a migration) or
CMD_WRITE (to the migration target), and its keys must share one slot, as in Redis Cluster.
The six typed operations stay the fast path.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from netmigrate.client.errors import (
    ClientClosed,
    CommandRefused,
    NetMigrateError,
    RedisReplyError,
    RetryBudgetSpent,
    ServerError,
    Timeout,
    TooLarge,
)
from netmigrate.client.merge import RETRY_FROM_TARGET, Reply, merge_double_read
from netmigrate.protocol.codec import (
    Body,
    Command,
    Delete,
    ErrorReply,
    Get,
    IncrBy,
    MGet,
    MSet,
    ProtocolError,
    Set,
    decode_fields,
    encode_request,
)
from netmigrate.protocol.constants import (
    F_FLAGS,
    F_OP,
    F_REQUEST_ID,
    F_STATUS,
    MIN_DATAGRAM,
    REPLY_BIT,
    RETRYABLE_STATUSES,
    UDP_MAX_PAYLOAD,
    Flag,
    Op,
    SetCondition,
    Status,
)
from netmigrate.protocol.path_mtu import datagram_limit, socket_route_mtu
from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd import resp
from netmigrate.rediscmd.table import Classified, CommandError, CommandTable, Kind

log = logging.getLogger(__name__)

Key = bytes | str
Value = bytes | str | int

_RECV_SIZE = 65536
_SOCKET_BUFFER = 4 << 20
_MAX_DRAIN = 256
#: A timed-out request is noticed at most this late (or 5% of its timeout, if less).
_MAX_TIMER_SLACK = 0.01
#: Default time budget of one call, all attempts and backoffs included. Long enough for a slot
#: transition under loss (SLOT_START resends start at 0.2 s) and a switch failover; short
#: enough that every retry lands while the agents still keep the request's record
#: (``agent.dedup.RECORD_TTL_MS``, 10 s: deadline + one attempt's timeout must stay below it).
DEFAULT_DEADLINE = 5.0
_OK = int(Status.OK)
_NOT_FOUND = int(Status.NOT_FOUND)
_DOUBLE_READ = int(Flag.DOUBLE_READ)
_TO_TARGET = int(Flag.TO_TARGET)
_RETRYABLE = frozenset(int(s) for s in RETRYABLE_STATUSES)
_STATUS_NAMES = {int(s): s.name for s in Status}

#: Events reported to ``on_event`` besides the retried statuses (named as in Status): a resend
#: after a timeout, a reply that came through a double read, a request the switch steered to a
#: migration target.
EVENT_TIMEOUT_RETRY = "TIMEOUT_RETRY"
EVENT_DOUBLE_READ = "DOUBLE_READ"
EVENT_TO_TARGET = "TO_TARGET"

#: Makes the client's socket: a bound UDP socket (made non-blocking by the client). For a
#: socket that must live elsewhere than the caller, e.g. in a network namespace.
SocketFactory = Callable[[], Awaitable[socket.socket]]


def _bytes(value: Value, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, str or int, not {type(value).__name__}")


def _mget_values(body: Any) -> list[bytes | None]:
    return list(body.values)


def _nothing(body: Any) -> None:
    return None


#: The caller's result from an OK (or GET's NOT_FOUND) reply body, per op.
_RESULTS: dict[int, Callable[[Any], Any]] = {
    Op.GET: attrgetter("value"),
    Op.SET: attrgetter("applied"),
    Op.DEL: attrgetter("count"),
    Op.INCRBY: attrgetter("value"),
    Op.MGET: _mget_values,
    Op.MSET: _nothing,
    Op.CMD_READ: attrgetter("data"),
    Op.CMD_WRITE: attrgetter("data"),
}

_CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"


@dataclass
class ClientStats:
    sent: int = 0
    retries: int = 0
    replies: int = 0
    #: Replies for no outstanding request (late, duplicate or foreign): ignored.
    unmatched: int = 0
    #: Replies whose request id matched but op did not: ignored.
    mismatched: int = 0
    bad_datagrams: int = 0
    timeouts: int = 0


class _Request:
    __slots__ = (
        "attempts",
        "backoff",
        "body",
        "datagram",
        "expires",
        "future",
        "op",
        "owner",
        "peer",
        "request_id",
        "slot",
        "target",
        "timeout",
        "token",
    )

    def __init__(
        self,
        request_id: int,
        op: int,
        slot: int,
        body: Body,
        datagram: bytes,
        future: asyncio.Future[Any],
        timeout: float,
        expires: float,
    ) -> None:
        self.request_id = request_id
        self.op = op
        self.slot = slot
        self.body = body
        self.datagram = datagram
        self.future = future
        self.timeout = timeout
        #: Loop time after which no new attempt starts (the call's deadline).
        self.expires = expires
        self.attempts = 0
        #: Bumped on every (re)send: a timer entry with an older token is stale.
        self.token = 0
        self.backoff: asyncio.TimerHandle | None = None
        self.owner: Reply | None = None
        self.target: Reply | None = None
        #: Where it goes when not to the keyspace's service address (one server directly).
        self.peer: Any = None


class AsyncClient:
    """Asyncio client of one keyspace (service address + keyspace id).

    ``timeout`` is per attempt; ``deadline`` is the budget of one call (seconds from its start
    after which no new attempt is made; the last attempt may still run its ``timeout``).
    ``retries``, if given, also caps the resends at that number (None: only the deadline
    bounds them). ``max_datagram`` is the keyspace's largest request (the same setting as its
    agents'); None derives it when the client opens from the MTU of the route towards
    ``address`` minus the IP and UDP headers, so a request that would be fragmented raises
    :class:`TooLarge` before anything is sent. Use as
    ``async with AsyncClient(("10.0.0.1", 50000), 50000) as c: await c.get("k")``.
    """

    def __init__(
        self,
        address: tuple[str, int],
        keyspace: int,
        *,
        timeout: float = 0.25,
        retries: int | None = None,
        deadline: float = DEFAULT_DEADLINE,
        backoff: float = 0.002,
        max_backoff: float = 0.1,
        max_datagram: int | None = None,
        client_id: int | None = None,
        socket_factory: SocketFactory | None = None,
        on_event: Callable[[str], None] | None = None,
        command_table: CommandTable | None = None,
    ) -> None:
        if not 0 <= keyspace <= 0xFFFF:
            raise ValueError(f"keyspace {keyspace} out of range 0..65535")
        if timeout <= 0 or deadline < 0 or backoff < 0 or (retries is not None and retries < 0):
            raise ValueError("timeout must be > 0, deadline, retries and backoff >= 0")
        if max_datagram is not None and not MIN_DATAGRAM <= max_datagram <= UDP_MAX_PAYLOAD:
            raise ValueError(f"max_datagram out of range {MIN_DATAGRAM}..{UDP_MAX_PAYLOAD}")
        self.address = address
        self.keyspace = keyspace
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: Set by open() when not given.
        self.max_datagram = max_datagram or 0
        self._derive_max_datagram = max_datagram is None
        self.client_id = secrets.randbits(32) if client_id is None else client_id
        if not 0 <= self.client_id <= 0xFFFFFFFF:
            raise ValueError("client_id must fit 32 bits")
        self.stats = ClientStats()
        #: Called with the kind of every retry the client makes (a retryable status's name or
        #: EVENT_TIMEOUT_RETRY) and of replies that were steered (EVENT_DOUBLE_READ /
        #: EVENT_TO_TARGET, once per reply the switch sent to a migration target).
        self.on_event = on_event
        self._socket_factory = socket_factory
        self._table = command_table
        #: The counter starts at a random value: two clients that drew the same client id
        #: then collide only if their counters also overlap while the agents remember the
        #: ids (docs/decisions.md D21).
        self._counter = secrets.randbits(32)
        self._pending: dict[int, _Request] = {}
        self._sock: socket.socket | None = None
        self._peer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Per distinct timeout, (deadline, token, request) in send order (see _arm).
        self._deadlines: dict[float, deque[tuple[float, int, _Request]]] = {}
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> AsyncClient:
        if self._sock is not None:
            return self
        loop = asyncio.get_running_loop()
        if self._socket_factory is not None:
            sock = await self._socket_factory()
            sock.setblocking(False)
            # The factory's socket may live where names do not resolve: the address is used
            # as given (numeric).
            self._sock, self._peer, self._loop = sock, self.address, loop
            if self._derive_max_datagram:
                # A second socket from the factory sees the same routes (its namespace's).
                probe = await self._socket_factory()
                try:
                    self._set_max_datagram(probe, self.address)
                except BaseException:
                    sock.close()
                    self._sock = None
                    raise
                finally:
                    probe.close()
            loop.add_reader(sock.fileno(), self._on_readable)
            return self
        host, port = self.address
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            raise NetMigrateError(f"cannot resolve {host}: {e}") from None
        if not infos:
            raise NetMigrateError(f"cannot resolve {host}")
        family, _, _, _, peer = infos[0]
        if self._derive_max_datagram:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                self._set_max_datagram(probe, peer)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
            sock.setblocking(False)
            sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        self._sock, self._peer, self._loop = sock, peer, loop
        loop.add_reader(sock.fileno(), self._on_readable)
        return self

    def _set_max_datagram(self, probe: socket.socket, peer: Any) -> None:
        """The largest datagram the route to ``peer`` carries unfragmented (``probe`` is an
        unconnected UDP socket; connecting it sends nothing)."""
        try:
            self.max_datagram = datagram_limit(socket_route_mtu(probe, peer), probe.family)
        except OSError as e:
            raise NetMigrateError(f"{e}; pass max_datagram") from None
        log.debug("largest datagram to %s: %d bytes", peer[0], self.max_datagram)

    def close(self) -> None:
        """Close the socket; outstanding requests fail with NetMigrateError."""
        if self._sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        pending, self._pending = self._pending, {}
        for req in pending.values():
            if req.backoff is not None:
                req.backoff.cancel()
            if not req.future.done():
                req.future.set_exception(ClientClosed("client closed with the request outstanding"))
        self._deadlines.clear()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def local_address(self) -> tuple[str, int]:
        if self._sock is None:
            raise NetMigrateError("client is not open")
        return self._sock.getsockname()[:2]

    # -- operations ----------------------------------------------------------------------

    async def get(self, key: Key, *, timeout: float | None = None) -> bytes | None:
        """The value of ``key``, or None when it does not exist."""
        k = key if type(key) is bytes else _bytes(key, "key")
        return await self._start(self._prepare(Op.GET, key_slot(k), Get(k), timeout))

    async def set(
        self,
        key: Key,
        value: Value,
        *,
        ttl_ms: int = 0,
        nx: bool = False,
        xx: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Set ``key``; False when the NX / XX condition did not hold. ``ttl_ms`` 0: no expiry."""
        if nx and xx:
            raise ValueError("nx and xx exclude each other")
        if ttl_ms < 0:
            raise ValueError("ttl_ms must be >= 0")
        cond = SetCondition.NX if nx else SetCondition.XX if xx else SetCondition.ALWAYS
        k = key if type(key) is bytes else _bytes(key, "key")
        body = Set(k, _bytes(value, "value"), ttl_ms, cond)
        return await self._start(self._prepare(Op.SET, key_slot(k), body, timeout))

    async def delete(self, key: Key, *, timeout: float | None = None) -> int:
        """Delete ``key``; the number of keys removed (0 or 1)."""
        k = key if type(key) is bytes else _bytes(key, "key")
        return await self._start(self._prepare(Op.DEL, key_slot(k), Delete(k), timeout))

    async def incrby(self, key: Key, delta: int = 1, *, timeout: float | None = None) -> int:
        """Add ``delta`` to the integer at ``key`` (0 if absent); the new value."""
        k = key if type(key) is bytes else _bytes(key, "key")
        body = IncrBy(k, int(delta))
        return await self._start(self._prepare(Op.INCRBY, key_slot(k), body, timeout))

    async def mget(self, keys: Iterable[Key], *, timeout: float | None = None) -> list[Any]:
        """Values of ``keys`` in order (None for missing); one request per slot involved."""
        ks = [_bytes(k, "key") for k in keys]
        if not ks:
            return []
        groups = _by_slot(ks)
        reqs = [
            self._prepare(Op.MGET, slot, MGet(tuple(ks[i] for i in idx)), timeout)
            for slot, idx in groups.items()
        ]
        parts = await asyncio.gather(*(self._start(r) for r in reqs))
        out: list[Any] = [None] * len(ks)
        for idx, values in zip(groups.values(), parts, strict=True):
            for i, v in zip(idx, values, strict=True):
                out[i] = v
        return out

    async def mset(
        self,
        items: Mapping[Key, Value] | Iterable[tuple[Key, Value]],
        *,
        timeout: float | None = None,
    ) -> None:
        """Set several keys: atomic within a slot; keys of several slots are set per slot
        (not atomically across slots). Every request is checked before any is sent."""
        pairs = items.items() if isinstance(items, Mapping) else items
        kv = [(_bytes(k, "key"), _bytes(v, "value")) for k, v in pairs]
        if not kv:
            return
        groups = _by_slot([k for k, _ in kv])
        reqs = [
            self._prepare(Op.MSET, slot, MSet(tuple(kv[i] for i in idx)), timeout)
            for slot, idx in groups.items()
        ]
        await asyncio.gather(*(self._start(r) for r in reqs))

    # -- any Redis command ---------------------------------------------------------------

    @property
    def command_table(self) -> CommandTable:
        """The table commands are classified with (the shipped one unless one was given)."""
        if self._table is None:
            self._table = CommandTable.shipped()
        return self._table

    def classify(self, args: list[bytes]) -> Classified:
        """Kind, keys and slot of a command; Redis' own error for what Redis would refuse
        (unknown command, wrong arity, keys of several slots)."""
        try:
            return self.command_table.classify(args)
        except CommandError as e:
            raise RedisReplyError(e.message) from None

    async def execute(self, *args: Value, timeout: float | None = None) -> Any:
        """Run one Redis command; its reply as Python values (bulk strings as bytes, simple
        strings as str, arrays as lists, nulls as None). An error reply raises
        :class:`RedisReplyError`."""
        return parse_reply(await self.execute_raw(*args, timeout=timeout))

    async def execute_raw(self, *args: Value, timeout: float | None = None) -> bytes:
        """Run one Redis command; Redis' RESP2 reply bytes (an error reply too)."""
        a = [_bytes(x, "argument") for x in args]
        return await self.command_raw(self.classify(a), a, timeout=timeout)

    async def command_raw(
        self, classified: Classified, args: list[bytes], *, timeout: float | None = None
    ) -> bytes:
        """Run a command classified already (see :meth:`classify`); Redis' reply bytes."""
        op = _op_of(classified)
        # A command without keys (PING, TIME, ECHO ...) may run at any server: slot 0's.
        slot = 0 if classified.slot is None else classified.slot
        body = Command((tuple(args),))
        return await self._start(self._prepare(op, slot, body, timeout))

    def pipeline_classified(
        self,
        requests: list[tuple[Classified, list[bytes]]],
        timeout: float | None = None,
        resp: int = 2,
    ) -> asyncio.Future[bytes]:
        """Send classified commands of one slot (or keyless) as one request, a pipeline
        batch: they run in order at the slot's server and the result is their reply bytes one
        after another. CMD_WRITE when any of them writes, else CMD_READ (double-read during a
        migration). Raises :class:`TooLarge` (nothing sent) when the batch does not fit.

        The batch is answered as one: a timeout or an error leaves the outcome of all its
        commands as one, and a reply too large for a datagram fails them all."""
        op = int(Op.CMD_READ)
        slot = 0
        for c, _ in requests:
            if _op_of(c) != op:
                op = int(Op.CMD_WRITE)
            if c.slot is not None:
                slot = c.slot
        body = Command(tuple(tuple(a) for _, a in requests), resp)
        return self._start(self._prepare(op, slot, body, timeout))

    def keyspace_wide_started(
        self,
        args: list[bytes],
        server: tuple[str, int],
        *,
        write: bool,
        timeout: float | None = None,
    ) -> asyncio.Future[bytes]:
        """Send a keyspace-wide command (KEYS, SCAN, FLUSHALL ...) to one server's agent
        directly, not through the switch; a future of that server's part of the answer (RESP
        bytes). Merging the parts of every server is the caller's job."""
        op = Op.CMD_WRITE if write else Op.CMD_READ
        req = self._prepare(op, 0, Command((tuple(args),)), timeout)
        req.peer = server
        return self._start(req)

    async def transaction(
        self, commands: Iterable[Iterable[Value]], *, timeout: float | None = None
    ) -> list[Any]:
        """Run commands on keys of one slot atomically, as MULTI/EXEC does; EXEC's results in
        order, a command that failed as its :class:`RedisReplyError` (not raised)."""
        value = _python(
            resp.ReplyParser.parse(await self.transaction_raw(commands, timeout=timeout))
        )
        if isinstance(value, RedisReplyError):
            raise value
        return value  # type: ignore[no-any-return]

    async def transaction_raw(
        self, commands: Iterable[Iterable[Value]], *, timeout: float | None = None
    ) -> bytes:
        """:meth:`transaction`, answering EXEC's reply bytes."""
        cmds = [[_bytes(x, "argument") for x in c] for c in commands]
        return await self.transaction_classified([(self.classify(c), c) for c in cmds], timeout)

    async def transaction_classified(
        self, requests: list[tuple[Classified, list[bytes]]], timeout: float | None = None
    ) -> bytes:
        """Run classified commands as one transaction; EXEC's reply bytes."""
        return await self.transaction_started(requests, timeout)

    def transaction_started(
        self,
        requests: list[tuple[Classified, list[bytes]]],
        timeout: float | None = None,
        resp: int = 2,
    ) -> asyncio.Future[bytes]:
        """:meth:`transaction_classified`, sent before it returns (a future of the reply)."""
        if not requests:
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            done.set_result(b"*0\r\n")
            return done
        slots = {c.slot for c, _ in requests if c.slot is not None}
        if len(slots) > 1:
            raise RedisReplyError(_CROSSSLOT)
        for c, _ in requests:
            _op_of(c)
        body = Command(tuple(tuple(a) for _, a in requests), resp, True)
        slot = slots.pop() if slots else 0
        return self._start(self._prepare(Op.CMD_WRITE, slot, body, timeout))

    # -- requests ------------------------------------------------------------------------

    def _prepare(self, op: int, slot: int, body: Body, timeout: float | None) -> _Request:
        """A request ready to send; raises TooLarge (nothing sent) when it cannot fit."""
        if self._sock is None:
            raise NetMigrateError("client is not open (use 'async with' or await open())")
        self._counter = counter = (self._counter + 1) & 0xFFFFFFFF
        request_id = self.client_id << 32 | counter
        datagram = encode_request(op, request_id, self.keyspace, slot, body)
        if len(datagram) > self.max_datagram:
            raise TooLarge(len(datagram), self.max_datagram)
        loop = self._loop
        assert loop is not None
        return _Request(
            request_id,
            op,
            slot,
            body,
            datagram,
            loop.create_future(),
            self.timeout if timeout is None else timeout,
            loop.time() + self.deadline,
        )

    def _may_retry(self, req: _Request, delay: float = 0.0) -> bool:
        """Whether the budget allows another attempt ``delay`` seconds from now."""
        if self.retries is not None and req.attempts > self.retries:
            return False
        return self._loop.time() + delay < req.expires  # type: ignore[union-attr]

    def _start(self, req: _Request) -> asyncio.Future[Any]:
        self._pending[req.request_id] = req
        self._transmit(req, req.datagram)
        return req.future

    def _transmit(self, req: _Request, datagram: bytes) -> None:
        req.attempts += 1
        req.token += 1
        self.stats.sent += 1
        try:
            self._sock.sendto(datagram, req.peer or self._peer)  # type: ignore[union-attr]
        except OSError as e:  # a full buffer is a lost datagram: the timer resends
            log.debug("sendto: %s", e)
        self._arm(req)

    def _resend(self, req: _Request) -> None:
        req.backoff = None
        if req.future.done() or self._sock is None:
            self._pending.pop(req.request_id, None)
            return
        self.stats.retries += 1
        req.owner = req.target = None
        if req.attempts == 1:
            req.datagram = encode_request(
                req.op, req.request_id, self.keyspace, req.slot, req.body, flags=Flag.RETRY
            )
        self._transmit(req, req.datagram)

    # -- timers --------------------------------------------------------------------------
    # Requests with the same timeout expire in the order they were sent, so one FIFO per
    # distinct timeout keeps deadlines sorted for free; entries of answered requests are
    # skipped when they come up (their token is stale). One loop timer serves them all, with a
    # little slack so that it fires once per batch of deadlines, not once per request.

    def _arm(self, req: _Request) -> None:
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + req.timeout
        queue = self._deadlines.get(req.timeout)
        if queue is None:
            queue = self._deadlines[req.timeout] = deque()
        queue.append((deadline, req.token, req))
        if self._timer_handle is None or deadline < self._timer_at:
            self._schedule(deadline + min(req.timeout * 0.05, _MAX_TIMER_SLACK))

    def _schedule(self, when: float) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        self._timer_at = when
        self._timer_handle = self._loop.call_at(when, self._on_timer)  # type: ignore[union-attr]

    def _on_timer(self) -> None:
        self._timer_handle = None
        now = self._loop.time()  # type: ignore[union-attr]
        expired: list[_Request] = []
        pending = self._pending
        for timeout, queue in list(self._deadlines.items()):
            while queue and queue[0][0] <= now:
                _, token, req = queue.popleft()
                if token == req.token and pending.get(req.request_id) is req:
                    expired.append(req)
            if not queue:
                del self._deadlines[timeout]
        for req in expired:
            self._expire(req)
        if self._deadlines and self._timer_handle is None:
            head = min(queue[0][0] for queue in self._deadlines.values())
            self._schedule(head + _MAX_TIMER_SLACK)

    def _expire(self, req: _Request) -> None:
        if req.future.done():  # cancelled by the caller
            del self._pending[req.request_id]
        elif self._may_retry(req):
            if self.on_event is not None:
                self.on_event(EVENT_TIMEOUT_RETRY)
            self._resend(req)
        else:
            self.stats.timeouts += 1
            del self._pending[req.request_id]
            req.future.set_exception(
                Timeout(
                    f"no reply from {self.address[0]}:{self.address[1]} after "
                    f"{req.attempts} attempts of {req.timeout:g} s (outcome unknown)",
                    req.attempts,
                )
            )

    # -- replies -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv = self._sock.recvfrom  # type: ignore[union-attr]
        for _ in range(_MAX_DRAIN):
            try:
                data, _ = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("recvfrom: %s", e)
                continue
            try:
                fields, body = decode_fields(data)
            except ProtocolError:
                self.stats.bad_datagrams += 1
                continue
            self._on_reply(fields, body)

    def _on_reply(self, fields: tuple[int, ...], body: Any) -> None:
        req = self._pending.get(fields[F_REQUEST_ID])
        if req is None:
            self.stats.unmatched += 1
            return
        if fields[F_OP] != req.op | REPLY_BIT:
            self.stats.mismatched += 1
            return
        self.stats.replies += 1
        status = fields[F_STATUS]
        flags = fields[F_FLAGS]
        if flags & _TO_TARGET and self.on_event is not None:
            # Both copies of a double read carry DOUBLE_READ: it is counted on the target's.
            self.on_event(EVENT_DOUBLE_READ if flags & _DOUBLE_READ else EVENT_TO_TARGET)
        if flags & _DOUBLE_READ:
            copy = Reply(status, body)
            if flags & _TO_TARGET:
                req.target = copy
            else:
                req.owner = copy
            chosen = merge_double_read(req.owner, req.target)
            if chosen is None:
                return
            status, body = chosen.status, chosen.body
            if chosen is req.target and status in RETRY_FROM_TARGET:
                self._complete(req, status, body, retry=True)
                return
        self._complete(req, status, body, retry=status in _RETRYABLE)

    def _complete(self, req: _Request, status: int, body: Any, *, retry: bool) -> None:
        if retry:
            if req.backoff is not None:
                return  # a retry is already scheduled
            # The exponent is capped: a deadline allows thousands of attempts at a zero
            # backoff, and 2.0 ** 1024 overflows.
            delay = min(self.backoff * (2.0 ** min(req.attempts - 1, 32)), self.max_backoff)
            if self._may_retry(req, delay) and not req.future.done():
                if self.on_event is not None:
                    self.on_event(_STATUS_NAMES[status])
                req.token += 1  # the attempt's timer no longer applies
                req.backoff = self._loop.call_later(delay, self._resend, req)  # type: ignore[union-attr]
                return
        if req.backoff is not None:
            req.backoff.cancel()
            req.backoff = None
        del self._pending[req.request_id]
        future = req.future
        if future.done():  # cancelled by the caller
            return
        if status == _OK or (status == _NOT_FOUND and req.op == Op.GET):
            future.set_result(_RESULTS[req.op](body))
            return
        message = body.message if isinstance(body, ErrorReply) else ""
        if retry:
            future.set_exception(RetryBudgetSpent(Status(status), message, req.attempts))
        else:
            future.set_exception(ServerError(Status(status), message))


def _op_of(c: Classified) -> int:
    """CMD_READ or CMD_WRITE for a classified command; CommandRefused for the others."""
    if c.kind is Kind.READ or c.kind is Kind.KEYLESS:
        return int(Op.CMD_READ)
    if c.kind is Kind.WRITE:
        return int(Op.CMD_WRITE)
    if c.kind is Kind.FANOUT:
        raise CommandRefused(f"{c.spec.name.upper()} works on the whole keyspace, not one slot")
    raise CommandRefused(c.reason or f"{c.spec.name.upper()} is not served through NetMigrate")


def parse_reply(data: bytes) -> Any:
    """Redis' reply bytes as Python values; an error reply raises :class:`RedisReplyError`
    (errors inside an array, as EXEC's, are left in it as exception objects)."""
    value = _python(resp.ReplyParser.parse(data))
    if isinstance(value, RedisReplyError):
        raise value
    return value


def _python(v: Any) -> Any:
    if isinstance(v, list):
        return [_python(x) for x in v]
    if isinstance(v, resp.Error):
        return RedisReplyError(v.message)
    if isinstance(v, resp.Status):
        return v.text
    if v is resp.NULL_ARRAY:
        return None
    return v


def _by_slot(keys: list[bytes]) -> dict[int, list[int]]:
    """Key indexes grouped by slot, slots in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(key_slot(k), []).append(i)
    return groups
