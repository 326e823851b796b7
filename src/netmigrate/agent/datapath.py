"""The agent's UDP data path: datagram in, checks, one Redis pipeline per wakeup, reply out.

Each wakeup of the event loop drains every datagram already queued on the socket (up to
``max_batch``), turns the valid ones into Redis commands, and writes them to Redis in one go.
Redis answers on the same connection in order, so per-key order is arrival order. Requests that
can be answered without Redis (malformed, wrong slot, cached retry) are answered at once.

Nothing is half-applied: every check runs before the request's single command is queued.
A write's command runs inside the script that also records its request id and answer in Redis
(``dedup.WRITE_SCRIPT``, D16), so at-most-once holds across a restart of the agent too.

Migration hooks (docs/migration.md): SLOT_START / SLOT_COMPLETE requests go to the target side,
their replies (the target's acknowledgements) to the source side, both *in arrival order* with
the client requests of the same wakeup, and requests for a slot that migrates in go to the
target side's bookkeeping, each through its interface (``interfaces``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from netmigrate.agent.answers import failure_answer
from netmigrate.agent.commands import OPS, OpSpec, check_multi_keys
from netmigrate.agent.config import RedisTarget
from netmigrate.agent.dedup import (
    RECORD_TTL_MS,
    SCRIPT_LOAD,
    WRITE_SCRIPT_SHA,
    Address,
    DedupEntry,
    DedupWindow,
    RecordError,
    WriteRecorder,
    fingerprint,
    record_fingerprint,
)
from netmigrate.agent.generic import GenericCommands
from netmigrate.agent.generic_lua import READ_SCRIPT_SHA, SCRIPT_LOADS
from netmigrate.agent.generic_lua import WRITE_SCRIPT_SHA as GENERIC_WRITE_SHA
from netmigrate.agent.generic_path import GenericPath, command_table_of
from netmigrate.agent.heat import SlotHeat
from netmigrate.agent.interfaces import IncomingSlots, TransitionReplies
from netmigrate.agent.recorded import reply_of_record
from netmigrate.agent.reserved import RESERVED_MESSAGE, RESERVED_PREFIXES
from netmigrate.agent.resp import ConnectionLost, RespConnection
from netmigrate.agent.slots import Admission, SlotTable
from netmigrate.agent.stats import AgentStats
from netmigrate.agent.udp import RECV_SIZE, open_udp
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
    F_STATUS,
    HEADER,
    HEADER_LEN,
    REPLY_BIT,
    TRANSITION_OPS,
    Status,
)
from netmigrate.protocol.slot import key_slot

log = logging.getLogger(__name__)


#: Most extra copies of one in-flight request that are answered when it completes.
_MAX_COPIES = 8

_BAD_REQUEST = int(Status.BAD_REQUEST)
_TOO_LARGE = int(Status.TOO_LARGE)
_WRONG_OWNER = int(Status.WRONG_OWNER)
_BUSY = int(Status.BUSY)
_OK = int(Status.OK)
_SERVE = Admission.SERVE
_TARGET = Admission.TARGET
_TRANSITION_OPS = frozenset(int(op) for op in TRANSITION_OPS)
_COLLISION_MESSAGE = (
    "request id already used by a different request (client id collision); not applied"
)
_TRANSITION_REPLIES = frozenset(int(op) | REPLY_BIT for op in TRANSITION_OPS)


class ScriptLoadError(ConnectionError):
    """Redis would not load the recording script (e.g. an ACL without scripting)."""


class DataPath(GenericPath):
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
        record_ttl_ms: int = RECORD_TTL_MS,
        heat: SlotHeat | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.server_id = server_id
        self.table = table
        self.dedup = dedup
        self.stats = stats
        self.max_datagram = max_datagram
        self.max_batch = max_batch
        self.heat = heat if heat is not None else SlotHeat()
        self._heat = self.heat.counts
        self.redis: RespConnection | None = None
        self._recorder = WriteRecorder(record_ttl_ms)
        self._record_ttl_ms = record_ttl_ms
        self._reloading_script = False
        #: Migration sides (``interfaces``); None until the agent wires them in.
        self.source: TransitionReplies | None = None
        self.target: IncomingSlots | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def bind(self, host: str, port: int) -> tuple[str, int]:
        """Open the UDP socket and start serving; returns the bound address."""
        self._sock = sock = open_udp(host, port)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        return sock.getsockname()[:2]

    async def connect(self, target: RedisTarget) -> None:
        """Open the data connection (scripts loaded, this Redis' command table read)."""
        conn = await RespConnection.open(target)
        try:
            shas = await conn.calls(SCRIPT_LOAD + b"".join(SCRIPT_LOADS), 1 + len(SCRIPT_LOADS))
            table = await command_table_of(conn)
        except BaseException:
            conn.close()
            raise
        if shas != list(_SCRIPT_SHAS):
            conn.close()
            raise ScriptLoadError(f"Redis refused to load the agent's write script: {shas}")
        self.generic = GenericCommands(table, self._record_ttl_ms)
        self.redis = conn

    def restore(self, records: Iterable[bytes]) -> int:
        """Put records of earlier writes (oldest first) into the window; how many went in."""
        n = 0
        for record in records:
            try:
                reply = reply_of_record(record)
            except (RecordError, ValueError, TypeError) as e:
                log.warning("ignoring a request id record: %s", e)
                continue
            fields = HEADER.unpack_from(reply)
            fp = record_fingerprint(record)
            n += self.dedup.install(fields[F_REQUEST_ID], fields[F_SLOT], reply, fp)
        return n

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
                data, addr = recv(RECV_SIZE)
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
        self._flush(commands, callbacks)

    def replay(self, datagrams: Iterable[tuple[bytes, Address]]) -> None:
        """Handle datagrams that were held back (in their order), as if they arrived now."""
        commands: list[bytes] = []
        callbacks: list[tuple[Any, Any]] = []
        for data, addr in datagrams:
            try:
                self._handle(data, addr, commands, callbacks)
            except Exception:
                self.stats.bad_datagrams += 1
                log.exception("unexpected error handling a held datagram")
        self._flush(commands, callbacks)

    def _flush(self, commands: list[bytes], callbacks: list[tuple[Any, Any]]) -> None:
        if commands:
            self.stats.batches += 1
            self.stats.redis_commands += len(commands)
            redis = self.redis
            if redis is None:
                for cb, ctx in callbacks:
                    cb(ConnectionLost("not connected to Redis"), ctx)
                return
            redis.send(b"".join(commands), callbacks)

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
            if op in _TRANSITION_REPLIES and self.source is not None:
                self.source.on_transition_reply(fields, body, commands, callbacks)
            else:
                stats.unexpected_replies += 1
            return
        stats.requests[op] += 1
        spec = OPS.get(op)
        if spec is None:
            if op in _TRANSITION_OPS and self.target is not None:
                if fields[F_KEYSPACE] != self.keyspace:
                    message = (
                        f"this agent serves keyspace {self.keyspace}, not {fields[F_KEYSPACE]}"
                    )
                    self._refuse(fields, addr, _BAD_REQUEST, message)
                    return
                self.target.on_transition(fields, body.epoch, addr)
                return
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
        fp = fingerprint(data)
        entry = self.dedup.get(request_id)
        if entry is not None:
            if entry.matches(fp):
                self._duplicate(entry, addr)
            else:
                self._collision(fields, addr)
            return
        # The slot's heat (a migration moves hot slots first): counted once per request id,
        # before the checks that follow, so generic commands count too.
        self._heat[fields[F_SLOT]] += 1
        if spec.generic:
            self._handle_generic(fields, body, spec, data, addr, commands, callbacks)
            return
        slot = fields[F_SLOT]
        if spec.multi_key:
            keys = spec.keys(body)
            problem = check_multi_keys(keys, slot)
            if problem is not None:
                self._refuse(fields, addr, *problem)
                return
        else:
            key = body.key  # type: ignore[union-attr]
            keys = (key,)
            if key.startswith(RESERVED_PREFIXES):
                self._refuse(fields, addr, _BAD_REQUEST, RESERVED_MESSAGE)
                return
            if key_slot(key) != slot:
                message = f"slot {slot} in the header, but the key hashes to {key_slot(key)}"
                self._refuse(fields, addr, _BAD_REQUEST, message)
                return
        admission = self.table.admit(slot, op, fields[F_FLAGS])
        if admission is not _SERVE:
            if admission is _TARGET:
                self.target.handle(fields, body, spec, data, addr, commands, callbacks)  # type: ignore[union-attr]
                return
            message = f"slot {slot} is not served by server {self.server_id}"
            self._refuse(fields, addr, _WRONG_OWNER, message)
            return
        redis = self.redis
        if redis is None or not redis.is_open:
            self._refuse(fields, addr, _BUSY, "the agent is reconnecting to Redis")
            return
        command = spec.command(body)
        if not spec.read_only:
            command = self._recorder.command(
                command, keys, data[:HEADER_LEN], request_id, spec.readback, fingerprint=fp
            )
        entry = self.dedup.begin(request_id, slot, addr, fp)
        commands.append(command)
        callbacks.append((self._on_redis_reply, (fields, spec, entry)))

    # -- helpers for the migration sides ------------------------------------------------

    def begin(self, fields: HeaderFields, addr: Address, data: bytes) -> DedupEntry | None:
        """Remember the request (``data``: its datagram) as in flight, or answer BUSY (None)
        when Redis is away."""
        redis = self.redis
        if redis is None or not redis.is_open:
            self._refuse(fields, addr, _BUSY, "the agent is reconnecting to Redis")
            return None
        return self.dedup.begin(fields[F_REQUEST_ID], fields[F_SLOT], addr, fingerprint(data))

    def queue(
        self,
        fields: HeaderFields,
        spec: OpSpec,
        entry: DedupEntry,
        command: bytes,
        commands: list[bytes],
        callbacks: list[Any],
        *,
        dirty: bytes | None = None,
        keys: tuple[bytes, ...] = (),
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        """Queue the request's command. A write runs in the recording script; with ``dirty``
        the script also adds ``keys`` (the write's keys) to that set, so a migration target's
        write, its dirty mark and its request id record are one step. ``on_applied`` runs once
        Redis answered that this very request applied the write (not on an error, a lost
        connection, or a replay of an earlier record)."""
        if not spec.read_only:
            if dirty is not None and not keys:
                raise ValueError("a dirty mark needs the written keys")
            if entry.fingerprint is None:
                raise ValueError("a write is queued with its request's fingerprint")
            command = self._recorder.command(
                command,
                keys,
                HEADER.pack(*fields),
                fields[F_REQUEST_ID],
                spec.readback,
                dirty,
                fingerprint=entry.fingerprint,
            )
        commands.append(command)
        if on_applied is None:
            callbacks.append((self._on_redis_reply, (fields, spec, entry)))
        else:
            callbacks.append((self._on_write_reply, (fields, spec, entry, on_applied)))

    def _on_write_reply(
        self, reply: Any, ctx: tuple[HeaderFields, OpSpec, DedupEntry, Callable[[], None]]
    ) -> None:
        fields, spec, entry, on_applied = ctx
        if not isinstance(reply, Exception) and type(reply) is not list:
            on_applied()
        self._on_redis_reply(reply, (fields, spec, entry))

    def fail(self, fields: HeaderFields, entry: DedupEntry, status: int, message: str) -> None:
        """Answer a begun request that was not applied (every waiting copy), and forget it."""
        datagram = encode_reply(fields, status, ErrorReply(message))
        self.stats.replies[status] += 1
        self.dedup.forget(entry)
        for addr in entry.waiters:
            self._send(datagram, addr)

    def refuse(self, fields: HeaderFields, addr: Address, status: int, message: str) -> None:
        self._refuse(fields, addr, status, message)

    def send_to(self, datagram: bytes, addr: Address) -> None:
        """Send from the data socket (SLOT_START / SLOT_COMPLETE go out this way)."""
        self._send(datagram, addr)

    def flush(self, commands: list[bytes], callbacks: list[Any]) -> None:
        self._flush(commands, callbacks)

    def _collision(self, fields: HeaderFields, addr: Address) -> None:
        """A known request id on a different request: another client drew the same id. Not a
        retry, so never answered from the other request's reply; not applied either, since
        its own retries could not be told from the other's (D21). ERROR is final: the
        client learns that nothing was applied."""
        self.stats.dedup_collisions += 1
        log.warning(
            "request id %#x reused by a different request (client id collision)",
            fields[F_REQUEST_ID],
        )
        self._refuse(fields, addr, int(Status.ERROR), _COLLISION_MESSAGE)

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

    def _fit(self, fields: HeaderFields, body_bytes: bytes, status: int = _OK) -> tuple[bytes, int]:
        """(datagram, status): the reply, or TOO_LARGE when it exceeds a datagram."""
        if HEADER_LEN + len(body_bytes) > self.max_datagram:
            status = int(Status.TOO_LARGE)
            body_bytes = encode_body(
                ErrorReply(
                    f"reply of {HEADER_LEN + len(body_bytes)} bytes exceeds the limit "
                    f"of {self.max_datagram}"
                )
            )
        return pack_reply_header(fields, status) + body_bytes, status

    def _answer(self, entry: DedupEntry, datagram: bytes, status: int, applied: bool) -> None:
        """Send the reply to the request and every copy of it waiting; remember it (or forget
        a request Redis certainly did not apply, so that its retry runs)."""
        self.stats.replies[status] += 1
        if applied:
            self.dedup.complete(entry, datagram)
        else:
            self.dedup.forget(entry)
        self._send(datagram, entry.addr)
        if entry.copies is not None:
            for addr in entry.copies:
                self._send(datagram, addr)

    def _on_redis_reply(self, reply: Any, ctx: tuple[HeaderFields, OpSpec, DedupEntry]) -> None:
        fields, spec, entry = ctx
        applied = True
        if isinstance(reply, Exception):
            status, body_bytes, applied = self._redis_failure(reply)
            datagram = pack_reply_header(fields, status) + body_bytes
        elif type(reply) is list and not spec.read_only:
            # The recording script found the request id recorded (the agent restarted, or
            # the window forgot it): the recorded answer, never a second application.
            datagram, status, applied = self._replay(reply[0], fields, entry)
        else:
            status, body = spec.reply(reply)
            body_bytes = encode_body(body)
            datagram, status = self._fit(fields, body_bytes, status)
        self._answer(entry, datagram, status, applied)

    def _replay(
        self, record: bytes, fields: HeaderFields, entry: DedupEntry
    ) -> tuple[bytes, int, bool]:
        """(datagram, status, remember it?) answering a request whose id Redis has a record
        of: the recorded answer, or ERROR when the record is another request's (D21)."""
        try:
            recorded_fp = record_fingerprint(record)
            if recorded_fp is not None and not entry.matches(recorded_fp):
                # Nothing was applied (the script found the record first); the entry goes,
                # so the other request's retries still find its record in Redis.
                self.stats.dedup_collisions += 1
                log.warning(
                    "request id %#x reused by a different request (client id collision)",
                    fields[F_REQUEST_ID],
                )
                status = int(Status.ERROR)
                return encode_reply(fields, status, ErrorReply(_COLLISION_MESSAGE)), status, False
            reply = reply_of_record(record)
            self.stats.dedup_hits += 1
            return reply, HEADER.unpack_from(reply)[F_STATUS], True
        except (RecordError, ValueError, TypeError) as e:
            # Not a record this agent wrote. Whether the write was applied is unknown, so the
            # answer is ERROR and it is remembered like one (D9).
            log.error("request %#x: unreadable request id record: %s", fields[F_REQUEST_ID], e)
            status = int(Status.ERROR)
            body = ErrorReply("the request id is recorded, but its answer is unreadable")
            return encode_reply(fields, status, body), status, True

    def _redis_failure(self, reply: Exception) -> tuple[int, bytes, bool]:
        """(status, body bytes, applied?) for an error instead of a reply."""
        self.stats.redis_errors += 1
        answer = failure_answer(reply)
        if answer.script_lost:
            self._reload_script()
        return answer.status, answer.body, answer.applied

    def _reload_script(self) -> None:
        """Someone flushed Redis' script cache: load the scripts again (once at a time)."""
        redis = self.redis
        if self._reloading_script or redis is None or not redis.is_open:
            return
        self._reloading_script = True
        log.warning("Redis lost the agent's scripts (SCRIPT FLUSH?); loading them again")
        redis.send(
            SCRIPT_LOAD + b"".join(SCRIPT_LOADS),
            [
                (self._script_reloaded, (sha, i == len(_SCRIPT_SHAS) - 1))
                for i, sha in enumerate(_SCRIPT_SHAS)
            ],
        )

    def _script_reloaded(self, reply: Any, ctx: tuple[bytes, bool]) -> None:
        sha, last = ctx
        if last:
            self._reloading_script = False
        if reply != sha:
            log.error("loading the agent's script %s again failed: %r", sha.decode(), reply)

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


#: What SCRIPT LOAD answers for the scripts :meth:`DataPath.connect` loads, in order.
_SCRIPT_SHAS = (WRITE_SCRIPT_SHA, READ_SCRIPT_SHA, GENERIC_WRITE_SHA)
