"""At-most-once execution: recent request ids and their replies, in bounded memory.

A request id is client id (high 32 bits) | counter (low 32 bits). The window remembers, per
request id, either "in flight" (with the addresses to answer) or the reply bytes, so that a
retry (RETRY flag or not) is answered from the cache instead of being applied again, also when
it arrives before the original finished.

Every entry and every record also carries the request's :func:`fingerprint` (64 bits of a hash
of its op, keyspace, slot and payload: keys, values, TTL, condition). A request whose id is
known but whose fingerprint differs is not a retry: it is another client's request that drew
the same id (a collision of random client ids and counters). It is refused with ERROR and
applied nowhere, so neither client consumes the other's answer (D21).

Bounds: at most ``max_entries`` remembered ids and ``max_bytes`` of cached replies in total,
at most ``max_per_client`` ids per client. Beyond that the least recently active client loses
its oldest ids first, so one busy client cannot push out everybody else's recent history. The
window must cover a client's retry horizon (timeout x attempts) at its request rate.

A migration source hands the target the entries of a slot (:meth:`DedupWindow.entries_of`).
Finding them by scanning the whole window per slot would cost O(window) per slot, so the
slots of a running migration are *watched*: an index slot -> request ids is kept for them
only (one dict lookup per request otherwise).

The window lives in memory; what survives a crash of the agent is the second half of this
module (D16): every write runs as one Lua script (:data:`WRITE_SCRIPT`) that applies it *and*
records its request id with Redis' answer under ``{__netmigrate__}:rid:<id>`` for
:data:`RECORD_TTL_MS`. Atomic, so a write is never applied without its record; the script
answers a request id it finds recorded from the record instead of applying it again, and the
records are read back into the window when the agent starts (:func:`load_records`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from typing import Any

from netmigrate.agent.reserved import REQUEST_ID_PREFIX, RESERVED_SLOT, request_id_key
from netmigrate.protocol.codec import HeaderFields
from netmigrate.protocol.constants import F_SLOT, HEADER, HEADER_LEN

Address = Any  # what socket.recvfrom returns


#: Entries :meth:`DedupWindow.watch_gradually` scans between two turns of the event loop
#: (~1-2 ms of CPU).
WATCH_CHUNK = 4096

#: Bytes of a request fingerprint.
FINGERPRINT_LEN = 8


def fingerprint(request: bytes) -> bytes:
    """The fingerprint of a request datagram: what a retry of it repeats exactly (op,
    keyspace, slot, payload) and a different request almost surely does not. The header's
    flags, status, server ids and request id are left out: a retry or a switch's copy
    changes those (RETRY, DOUBLE_READ, TO_TARGET)."""
    return blake2b(
        request[1:2] + request[4:8] + request[HEADER_LEN:], digest_size=FINGERPRINT_LEN
    ).digest()


class DedupEntry:
    __slots__ = ("addr", "copies", "fingerprint", "reply", "request_id", "slot")

    def __init__(
        self, request_id: int, slot: int, addr: Address, fingerprint: bytes | None
    ) -> None:
        self.request_id = request_id
        self.slot = slot
        #: The request's :func:`fingerprint`; None when unknown (handed over by an agent or
        #: read from a record that predates fingerprints): any request with the id matches.
        self.fingerprint = fingerprint
        #: None while the request is in flight.
        self.reply: bytes | None = None
        #: Where the original came from, and where copies that arrived while it was in flight
        #: came from (None when there were none: the common case allocates no list).
        self.addr = addr
        self.copies: list[Address] | None = None

    def matches(self, fp: bytes) -> bool:
        """Whether a request with fingerprint ``fp`` is this entry's request (or a retry)."""
        return self.fingerprint is None or self.fingerprint == fp

    @property
    def waiters(self) -> list[Address]:
        """Every address to answer when the request completes, the original sender first."""
        return [self.addr] if self.copies is None else [self.addr, *self.copies]


class DedupWindow:
    def __init__(self, max_entries: int, max_per_client: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self.max_bytes = max_bytes
        self._entries: dict[int, DedupEntry] = {}
        #: client id -> its entries, oldest first; the dict itself is in LRU order of clients.
        self._clients: OrderedDict[int, deque[DedupEntry]] = OrderedDict()
        self._queued = 0
        #: Watched slots -> request ids remembered for them (empty dict: nothing watched).
        self._watched: dict[int, set[int]] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: int) -> DedupEntry | None:
        return self._entries.get(request_id)

    def begin(
        self, request_id: int, slot: int, addr: Address, fingerprint: bytes | None = None
    ) -> DedupEntry:
        """Remember ``request_id`` (with its request's fingerprint) as in flight."""
        entry = DedupEntry(request_id, slot, addr, fingerprint)
        self._entries[request_id] = entry
        if self._watched:
            ids = self._watched.get(slot)
            if ids is not None:
                ids.add(request_id)
        client = request_id >> 32
        queue = self._clients.get(client)
        if queue is None:
            queue = self._clients[client] = deque()
        else:
            self._clients.move_to_end(client)
        queue.append(entry)
        self._queued += 1
        if len(queue) > self.max_per_client:
            self._drop(queue.popleft())
        if self._queued > self.max_entries:
            self._evict()
        return entry

    def complete(self, entry: DedupEntry, reply: bytes) -> None:
        """The request was applied and answered ``reply``: keep it for retries."""
        entry.reply = reply
        if self._entries.get(entry.request_id) is entry:
            self.bytes += len(reply)
            if self.bytes > self.max_bytes:
                self._evict()

    def forget(self, entry: DedupEntry) -> None:
        """The request was not applied (e.g. refused): a retry must run again."""
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]
            self._unindex(entry)
            if entry.reply is not None:
                self.bytes -= len(entry.reply)

    def install(
        self, request_id: int, slot: int, reply: bytes, fingerprint: bytes | None = None
    ) -> bool:
        """Remember a request another agent applied (its reply given); False if known here."""
        if request_id in self._entries:
            return False
        self.complete(self.begin(request_id, slot, None, fingerprint), reply)
        return True

    async def watch_gradually(
        self, slots: list[int] | range | set[int], chunk: int = WATCH_CHUNK
    ) -> None:
        """Start indexing ``slots`` (one scan of the window for all of them), giving the
        event loop back every ``chunk`` entries scanned.

        One pass over a window of tens of thousands of entries costs tens of ms of CPU; on a
        source host at its CPU quota that blocks the data path for four times as long, and
        every client with it (issue #14: a 180 ms gap in every client's operations when a
        migration of 8,192 slots started). The slots are indexed from the start, so an
        entry begun during the scan is indexed by :meth:`begin`; one dropped during it is
        skipped (or unindexed by the drop)."""
        new = {s: set() for s in slots if s not in self._watched}
        if not new:
            return
        self._watched.update(new)
        entries = self._entries
        snapshot = list(entries.values())
        for i in range(0, len(snapshot), chunk):
            for entry in snapshot[i : i + chunk]:
                ids = new.get(entry.slot)
                if ids is not None and entries.get(entry.request_id) is entry:
                    ids.add(entry.request_id)
            await asyncio.sleep(0)

    def unwatch(self, slots: list[int] | range | set[int]) -> None:
        for s in slots:
            self._watched.pop(s, None)

    def entries_of(self, slot: int) -> list[DedupEntry]:
        """Remembered entries of a watched ``slot``."""
        ids = self._watched.get(slot)
        if ids is None:
            raise KeyError(f"slot {slot} is not watched")
        return [self._entries[rid] for rid in ids if rid in self._entries]

    def _unindex(self, entry: DedupEntry) -> None:
        if self._watched:
            ids = self._watched.get(entry.slot)
            if ids is not None:
                ids.discard(entry.request_id)

    def request_ids(self, slot: int) -> Iterator[int]:
        """Remembered request ids of ``slot`` (what a migration source hands its target)."""
        return (rid for rid, e in self._entries.items() if e.slot == slot)

    def _drop(self, entry: DedupEntry) -> None:
        self._queued -= 1
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]
            self._unindex(entry)
            self.evictions += 1
            if entry.reply is not None:
                self.bytes -= len(entry.reply)

    def _evict(self) -> None:
        while self._clients and (self._queued > self.max_entries or self.bytes > self.max_bytes):
            client, queue = next(iter(self._clients.items()))
            self._drop(queue.popleft())
            if not queue:
                del self._clients[client]


# -- records in Redis: at-most-once across agent restarts (D16) ---------------------------

#: How long Redis keeps a write's record. It must outlast every retry a client may still send:
#: the clients give up after (1 + retries) x timeout plus short backoffs, at most about 3 s
#: with the project's defaults (loadgen: 9 x 0.25 s, ``netmigrate client``: 5 x 0.5 s), so 10 s
#: leaves room for slower settings and an agent restart, and bounds the records' memory to
#: 10 s of writes (about 150 bytes each).
RECORD_TTL_MS = 10_000

#: Record kinds (first byte of a record). ``N`` / ``S`` / ``I`` / ``B``: the request header
#: (HEADER_LEN bytes) and the request's fingerprint (FINGERPRINT_LEN bytes) follow, then Redis'
#: answer: nil, a status, an integer in decimal, a bulk string. ``D``: the fingerprint, then a
#: whole reply datagram (an id installed from a migration source); ``E``: a whole reply
#: datagram whose request's fingerprint is unknown (handed over by an agent without them).
#: The lower-case kinds are the same without a fingerprint, as agents before D21 wrote them
#: (read back for as long as such a record may live).
_KIND_NIL, _KIND_STATUS, _KIND_INT, _KIND_BULK, _KIND_DATAGRAM = b"NSIBD"
_KIND_DATAGRAM_NO_FP = ord("E")
_LEGACY_KINDS = {ord(k): ord(k.upper()) for k in "nsib"}
_LEGACY_DATAGRAM = ord("d")

#: KEYS: the written keys (declared for the cluster check; may be empty). ARGV: record key,
#: TTL ms, request header and fingerprint, "1" to answer INCRBY with the key read back (Lua
#: numbers are doubles: an integer reply above 2^53 would lose digits on its way through the
#: script), the
#: migration target's dirty set or "" (its write and its dirty mark are then one step, D10),
#: then the write command itself. Answers ``{record}`` when the id is already recorded, else
#: what the command answered. A Redis error applied nothing, so it records nothing.
#: ``allow-cross-slot-keys``: the record lives in the reserved slot, the write in its own
#: (legal for keys this node serves; a MULTI/EXEC across slots is refused with CROSSSLOT).
WRITE_SCRIPT = b"""#!lua flags=allow-cross-slot-keys
local old = redis.call('GET', ARGV[1])
if old then return {old} end
local n = #ARGV
local r
if n <= 4005 then
  r = redis.pcall(unpack(ARGV, 6))
else
  -- Only MSET is this long. unpack() is bounded by Lua's C stack, and chunks of one script
  -- are still one atomic step.
  for i = 7, n, 4000 do
    r = redis.pcall(ARGV[6], unpack(ARGV, i, math.min(i + 3999, n)))
    if type(r) == 'table' and r.err then return r end
  end
end
if type(r) == 'table' and r.err then return r end
local rec
if ARGV[4] == '1' then
  r = redis.call('GET', ARGV[7])
  rec = 'I' .. ARGV[3] .. r
elseif type(r) == 'number' then
  rec = 'I' .. ARGV[3] .. string.format('%d', r)
elseif r == false then
  rec = 'N' .. ARGV[3]
elseif type(r) == 'table' then
  rec = 'S' .. ARGV[3] .. r.ok
else
  rec = 'B' .. ARGV[3] .. r
end
if ARGV[5] ~= '' then
  for i = 1, #KEYS, 4000 do
    redis.call('SADD', ARGV[5], unpack(KEYS, i, math.min(i + 3999, #KEYS)))
  end
end
redis.call('SET', ARGV[1], rec, 'PX', ARGV[2])
return r
"""
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT).hexdigest().encode()
#: ``SCRIPT LOAD`` of :data:`WRITE_SCRIPT` (sent on every new data-path connection).
SCRIPT_LOAD = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%d\r\n%b\r\n" % (
    len(WRITE_SCRIPT),
    WRITE_SCRIPT,
)

_EVALSHA = b"$7\r\nEVALSHA\r\n$40\r\n" + WRITE_SCRIPT_SHA + b"\r\n"
_KEY_LEN = len(request_id_key(0))
_RECORD_KEY = b"$%d\r\n%b" % (_KEY_LEN, REQUEST_ID_PREFIX)
_HEADER_BULK = b"$%d\r\n" % (HEADER_LEN + FINGERPRINT_LEN)
_YES = b"$1\r\n1\r\n"
_NO = b"$1\r\n0\r\n"
_NO_DIRTY = b"$0\r\n\r\n"


class WriteRecorder:
    """Turns a write's RESP command into the :data:`WRITE_SCRIPT` call that applies and
    records it. Raw bytes, because the data path builds one per write."""

    __slots__ = ("_ttl",)

    def __init__(self, ttl_ms: int = RECORD_TTL_MS) -> None:
        if ttl_ms < 1:
            raise ValueError("the record TTL must be positive")
        ttl = b"%d" % ttl_ms
        self._ttl = b"$%d\r\n%b\r\n" % (len(ttl), ttl)

    def command(
        self,
        command: bytes,
        keys: tuple[bytes, ...],
        header: bytes,
        request_id: int,
        readback: bool,
        dirty: bytes | None = None,
        *,
        fingerprint: bytes,
    ) -> bytes:
        """``EVALSHA`` of ``command`` (one RESP array) for the request ``header`` describes,
        whose :func:`fingerprint` is ``fingerprint`` (kept in the record)."""
        if len(fingerprint) != FINGERPRINT_LEN:
            raise ValueError(f"a fingerprint has {FINGERPRINT_LEN} bytes")
        header += fingerprint
        end = command.index(b"\r\n")
        argc = int(command[1:end])
        if dirty is None and len(keys) == 1:  # the hot path: one formatting step
            key = keys[0]
            return b"*%d\r\n%b$1\r\n1\r\n$%d\r\n%b\r\n%b%016x\r\n%b%b%b\r\n%b%b%b" % (
                argc + 9,
                _EVALSHA,
                len(key),
                key,
                _RECORD_KEY,
                request_id,
                self._ttl,
                _HEADER_BULK,
                header,
                _YES if readback else _NO,
                _NO_DIRTY,
                command[end + 2 :],
            )
        parts = [
            b"*%d\r\n" % (argc + len(keys) + 8),
            _EVALSHA,
            b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys)),
        ]
        for k in keys:
            parts.append(b"$%d\r\n%b\r\n" % (len(k), k))
        parts.append(b"%b%016x\r\n" % (_RECORD_KEY, request_id))
        parts.append(self._ttl)
        parts.append(b"%b%b\r\n" % (_HEADER_BULK, header))
        parts.append(_YES if readback else _NO)
        parts.append(_NO_DIRTY if dirty is None else b"$%d\r\n%b\r\n" % (len(dirty), dirty))
        parts.append(command[end + 2 :])
        return b"".join(parts)


class RecordError(ValueError):
    """A stored record that this agent did not write (or a newer format)."""


def _split_record(record: bytes) -> tuple[int, bytes | None, bytes]:
    """(kind in upper case, fingerprint or None, the rest) of a record."""
    if not record:
        raise RecordError("empty record")
    kind = record[0]
    if kind in _LEGACY_KINDS:
        return _LEGACY_KINDS[kind], None, record[1:]
    if kind in (_LEGACY_DATAGRAM, _KIND_DATAGRAM_NO_FP):
        return _KIND_DATAGRAM, None, record[1:]
    if kind not in b"NSIBD":
        raise RecordError(f"unknown record kind {record[:1]!r}")
    if len(record) < 1 + FINGERPRINT_LEN + HEADER_LEN:
        raise RecordError("record shorter than a header and a fingerprint")
    if kind == _KIND_DATAGRAM:
        return kind, record[1 : 1 + FINGERPRINT_LEN], record[1 + FINGERPRINT_LEN :]
    fp = record[1 + HEADER_LEN : 1 + HEADER_LEN + FINGERPRINT_LEN]
    return kind, fp, record[1 : 1 + HEADER_LEN] + record[1 + HEADER_LEN + FINGERPRINT_LEN :]


def record_slot(record: bytes) -> int | None:
    """The slot of the request a record is of, read from its header in place (None when the
    record is too short or of an unknown kind): cheap enough to pick one slot's records out
    of all of them before decoding any."""
    if not record:
        return None
    kind = record[0]
    if kind == _KIND_DATAGRAM:
        offset = 1 + FINGERPRINT_LEN
    elif (
        kind in b"NSIB" or kind in _LEGACY_KINDS or kind in (_LEGACY_DATAGRAM, _KIND_DATAGRAM_NO_FP)
    ):
        offset = 1
    else:
        return None
    if len(record) < offset + HEADER_LEN:
        return None
    return HEADER.unpack_from(record, offset)[F_SLOT]


def record_fingerprint(record: bytes) -> bytes | None:
    """The fingerprint of the request a record is of (None: a record without one)."""
    return _split_record(record)[1]


def decode_record(record: bytes) -> tuple[HeaderFields, Any] | bytes:
    """A record -> (request header fields, Redis' answer), or the reply datagram (kind ``D``)."""
    kind, _, rest = _split_record(record)
    if kind == _KIND_DATAGRAM:
        if len(rest) < HEADER_LEN:
            raise RecordError("datagram record shorter than a header")
        return rest
    if len(rest) < HEADER_LEN:
        raise RecordError("record shorter than a header")
    fields: HeaderFields = HEADER.unpack_from(rest)
    payload = rest[HEADER_LEN:]
    if kind == _KIND_NIL and not payload:
        return fields, None
    if kind in (_KIND_STATUS, _KIND_BULK):
        return fields, payload
    if kind == _KIND_INT:
        try:
            return fields, int(payload)
        except ValueError:
            raise RecordError(f"integer record holds {payload[:40]!r}") from None
    raise RecordError(f"unknown record kind {record[:1]!r}")


def datagram_record(reply: bytes, fingerprint: bytes | None = None) -> bytes:
    """The record of a reply datagram as it is (an id another agent applied), with the
    fingerprint of its request when known."""
    if fingerprint is None:
        return bytes((_KIND_DATAGRAM_NO_FP,)) + reply
    if len(fingerprint) != FINGERPRINT_LEN:
        raise ValueError(f"a fingerprint has {FINGERPRINT_LEN} bytes")
    return bytes((_KIND_DATAGRAM,)) + fingerprint + reply


async def record_replies(
    admin: Any,
    replies: Iterable[tuple[int, bytes] | tuple[int, bytes, bytes | None]],
    ttl_ms: int = RECORD_TTL_MS,
) -> int:
    """Record (request id, reply datagram[, fingerprint]) of requests applied elsewhere, e.g.
    the ids a migration source hands over, so that they survive a restart here too; existing
    records are kept. ``admin`` is a ``redis.asyncio`` client. Returns how many were
    recorded."""
    pipe = admin.pipeline(transaction=False)
    n = 0
    for request_id, reply, *fp in replies:
        record = datagram_record(reply, fp[0] if fp else None)
        pipe.set(request_id_key(request_id), record, px=ttl_ms, nx=True)
        n += 1
    if not n:
        return 0
    return sum(1 for ok in await pipe.execute() if ok)


async def load_records(admin: Any, batch: int = 2000) -> list[bytes]:
    """Every live record in Redis, oldest first (the order the window must learn them in).

    ``admin`` is a ``redis.asyncio`` client. The records are in the reserved slot, so the
    cluster's slot index lists them without a scan of the whole key space."""
    count = int(await admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", RESERVED_SLOT))
    if not count:
        return []
    keys = await admin.execute_command("CLUSTER", "GETKEYSINSLOT", RESERVED_SLOT, count)
    keys = [k for k in keys if k.startswith(REQUEST_ID_PREFIX)]
    aged: list[tuple[int, bytes]] = []
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        pipe = admin.pipeline(transaction=False)
        pipe.mget(chunk)
        for k in chunk:
            pipe.pttl(k)
        values, *ttls = await pipe.execute()
        # Same TTL for every record: the sooner it expires, the older it is. A record that
        # expired between the two calls (None, or a TTL < 0) is simply gone.
        aged.extend((t, v) for v, t in zip(values, ttls, strict=True) if v is not None and t > 0)
    aged.sort(key=lambda tv: tv[0])
    return [v for _, v in aged]
