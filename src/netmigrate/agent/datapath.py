"""The agent's UDP data path: datagram in, checks, one Redis pipeline per wakeup, reply out.

Each wakeup of the event loop drains every datagram already queued on the socket (up to
``max_batch``), turns the valid ones into Redis commands, and writes them to Redis in one go.
Redis answers on the same connection in order, so per-key order is arrival order. Requests that
can be answered without Redis (malformed, wrong slot, cached retry) are answered at once.

Nothing is half-applied: every check runs before the request's single command is queued.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from netmigrate.agent.commands import OPS, TRANSIENT_ERRORS, OpSpec
from netmigrate.agent.dedup import Address, DedupEntry, DedupWindow
from netmigrate.agent.reserved import RESERVED_PREFIX
from netmigrate.agent.resp import ConnectionLost, ReplyError, RespConnection
from netmigrate.agent.slots import Admission, SlotTable
from netmigrate.agent.stats import AgentStats
from netmigrate.protocol.codec import (
    ErrorReply,
    HeaderFields,
    ProtocolError,
    decode_fields,
    encode_body,
    encode_reply,
    pack_reply_header,
    reply_to_malformed,
)
from netmigrate.protocol.constants import (
    F_FLAGS,
    F_KEYSPACE,
    F_OP,
    F_REQUEST_ID,
    F_SLOT,
    HEADER_LEN,
    REPLY_BIT,
    Status,
)
from netmigrate.protocol.slot import key_slot

log = logging.getLogger(__name__)

#: Read buffer: any UDP payload fits, so an oversized request is seen whole and refused.
_RECV_SIZE = 65536
_SOCKET_BUFFER = 4 << 20

#: Most extra copies of one in-flight request that are answered when it completes.
_MAX_COPIES = 8

_BAD_REQUEST = int(Status.BAD_REQUEST)
_TOO_LARGE = int(Status.TOO_LARGE)
_WRONG_OWNER = int(Status.WRONG_OWNER)
_BUSY = int(Status.BUSY)
_SERVE = Admission.SERVE
_RESERVED_MESSAGE = f"keys starting with {RESERVED_PREFIX.decode()} are reserved"


class DataPath:
    def __init__(
        self,
        *,
        keyspace: int,
        server_id: int,
        table: SlotTable,
        dedup: DedupWindow,
        stats: AgentStats,
        max_datagram: int,
        max_batch: int,
    ) -> None:
        self.keyspace = keyspace
        self.server_id = server_id
        self.table = table
        self.dedup = dedup
        self.stats = stats
        self.max_datagram = max_datagram
        self.max_batch = max_batch
        self.redis: RespConnection | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def bind(self, host: str, port: int) -> tuple[str, int]:
        """Open the UDP socket and start serving; returns the bound address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        return sock.getsockname()[:2]

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    # -- receive -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv = self._sock.recvfrom  # type: ignore[union-attr]
        commands: list[bytes] = []
        callbacks: list[tuple[Any, Any]] = []
        for _ in range(self.max_batch):
            try:
                data, addr = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. a queued ICMP error; the next read goes on
                log.debug("recvfrom: %s", e)
                continue
            try:
                self._handle(data, addr, commands, callbacks)
            except Exception:  # a bug must not stop the data path: count, log, go on
                self.stats.bad_datagrams += 1
                log.exception("unexpected error handling a datagram")
        if commands:
            self.stats.batches += 1
            self.stats.redis_commands += len(commands)
            self.redis.send(b"".join(commands), callbacks)  # type: ignore[union-attr]

    def _handle(
        self, data: bytes, addr: Address, commands: list[bytes], callbacks: list[Any]
    ) -> None:
        # The hot path: every check, in the order that decides the answer. Plain locals and
        # early returns, because this runs once per datagram.
        stats = self.stats
        stats.datagrams += 1
        try:
            fields, body = decode_fields(data)
        except ProtocolError as e:
            self._malformed(e, addr)
            return
        op = fields[F_OP]
        if op & REPLY_BIT:
            stats.unexpected_replies += 1
            return
        stats.requests[op] += 1
        spec = OPS.get(op)
        if spec is None:
            self._refuse(fields, addr, _BAD_REQUEST, f"op 0x{op:02x} is not served here")
            return
        if fields[F_KEYSPACE] != self.keyspace:
            message = f"this agent serves keyspace {self.keyspace}, not {fields[F_KEYSPACE]}"
            self._refuse(fields, addr, _BAD_REQUEST, message)
            return
        if len(data) > self.max_datagram:
            message = f"request of {len(data)} bytes exceeds the limit of {self.max_datagram}"
            self._refuse(fields, addr, _TOO_LARGE, message)
            return
        request_id = fields[F_REQUEST_ID]
        entry = self.dedup.get(request_id)
        if entry is not None:
            self._duplicate(entry, addr)
            return
        slot = fields[F_SLOT]
        if spec.multi_key:
            problem = _check_multi_keys(spec.keys(body), slot)
            if problem is not None:
                self._refuse(fields, addr, *problem)
                return
        else:
            key = body.key  # type: ignore[union-attr]
            if key.startswith(RESERVED_PREFIX):
                self._refuse(fields, addr, _BAD_REQUEST, _RESERVED_MESSAGE)
                return
            if key_slot(key) != slot:
                message = f"slot {slot} in the header, but the key hashes to {key_slot(key)}"
                self._refuse(fields, addr, _BAD_REQUEST, message)
                return
        if self.table.admit(slot, op, fields[F_FLAGS]) is not _SERVE:
            message = f"slot {slot} is not served by server {self.server_id}"
            self._refuse(fields, addr, _WRONG_OWNER, message)
            return
        redis = self.redis
        if redis is None or not redis.is_open:
            self._refuse(fields, addr, _BUSY, "the agent is reconnecting to Redis")
            return
        command = spec.command(body)
        entry = self.dedup.begin(request_id, slot, addr)
        commands.append(command)
        callbacks.append((self._on_redis_reply, (fields, spec, entry)))

    def _duplicate(self, entry: DedupEntry, addr: Address) -> None:
        """A request id seen before: answer from the window, never apply it again."""
        if entry.reply is None:
            # Every copy gets its answer when the original completes (bounded, so that a
            # flood of copies cannot make one request send unbounded replies).
            self.stats.dedup_inflight += 1
            if entry.copies is None:
                entry.copies = [addr]
            elif len(entry.copies) < _MAX_COPIES:
                entry.copies.append(addr)
        else:
            self.stats.dedup_hits += 1
            self._send(entry.reply, addr)

    # -- Redis replies -------------------------------------------------------------------

    def _on_redis_reply(self, reply: Any, ctx: tuple[HeaderFields, OpSpec, DedupEntry]) -> None:
        fields, spec, entry = ctx
        applied = True
        if isinstance(reply, Exception):
            status, body_bytes, applied = self._redis_failure(reply, spec.read_only)
        else:
            status, body = spec.reply(reply)
            body_bytes = encode_body(body)
            if HEADER_LEN + len(body_bytes) > self.max_datagram:
                status = int(Status.TOO_LARGE)
                body_bytes = encode_body(
                    ErrorReply(
                        f"reply of {HEADER_LEN + len(body_bytes)} bytes exceeds the limit "
                        f"of {self.max_datagram}"
                    )
                )
        datagram = pack_reply_header(fields, status) + body_bytes
        self.stats.replies[status] += 1
        if applied:
            self.dedup.complete(entry, datagram)
        else:
            self.dedup.forget(entry)
        self._send(datagram, entry.addr)
        if entry.copies is not None:
            for addr in entry.copies:
                self._send(datagram, addr)

    def _redis_failure(self, reply: Exception, read_only: bool) -> tuple[int, bytes, bool]:
        """(status, body bytes, applied?) for an error instead of a reply."""
        self.stats.redis_errors += 1
        if isinstance(reply, ReplyError):
            message = str(reply)
            if message.startswith(TRANSIENT_ERRORS):
                return int(Status.BUSY), encode_body(ErrorReply(f"Redis: {message}")), False
            return int(Status.ERROR), encode_body(ErrorReply(message)), True
        if isinstance(reply, ConnectionLost):
            if read_only:  # a read changed nothing: the client may simply retry it
                return int(Status.BUSY), encode_body(ErrorReply(f"Redis: {reply}")), False
            # A write sent but unanswered may have been applied. Remember the ERROR so that
            # a retry cannot apply it a second time.
            text = "connection to Redis lost; the request may or may not have been applied"
            return int(Status.ERROR), encode_body(ErrorReply(text)), True
        log.error("unexpected reply object from Redis: %r", reply)
        return int(Status.ERROR), encode_body(ErrorReply("internal error")), True

    # -- answers without Redis -----------------------------------------------------------

    def _refuse(self, fields: HeaderFields, addr: Address, status: int, message: str) -> None:
        self.stats.replies[status] += 1
        self._send(encode_reply(fields, status, ErrorReply(message)), addr)

    def _malformed(self, error: ProtocolError, addr: Address) -> None:
        stats = self.stats
        stats.bad_datagrams += 1
        answer = reply_to_malformed(error)
        if answer is not None:
            stats.bad_answered += 1
            stats.replies[_BAD_REQUEST] += 1
            self._send(answer, addr)

    def _send(self, datagram: bytes, addr: Address) -> None:
        sock = self._sock
        if sock is None:  # stopping: Redis answers still in flight have nowhere to go
            return
        try:
            sock.sendto(datagram, addr)
        except OSError:
            # Full buffer or unreachable peer: the client times out and retries, and a
            # completed request is then answered from the dedup window.
            self.stats.send_errors += 1


def _check_multi_keys(keys: tuple[bytes, ...], slot: int) -> tuple[int, str] | None:
    """(status, message) when the keys of a multi-key request do not fit its header slot."""
    first = key_slot(keys[0])
    for key in keys:
        if key.startswith(RESERVED_PREFIX):
            return _BAD_REQUEST, _RESERVED_MESSAGE
        if key_slot(key) != first:
            return int(Status.CROSSSLOT), "the keys of one request must share a slot"
    if first != slot:
        return _BAD_REQUEST, f"slot {slot} in the header, but the keys hash to {first}"
    return None
