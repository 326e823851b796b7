"""The source's reads of its own Redis for a migration: counting and listing a slot's keys,
the sizes of keys, DUMP + PTTL of keys, the pieces of a key too big for one DUMP, and the
UNLINKs of finalize, on a raw connection of their own."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.config import RedisTarget
from netmigrate.agent.reserved import is_reserved
from netmigrate.agent.resp import ReplyError, RespConnection, command_of
from netmigrate.agent.resp import command as resp_command
from netmigrate.agent.restore import ttl_from_pttl
from netmigrate.agent.source.model import StepFailed

#: Keys asked for beyond a slot's count when listing it (see ``SourceKeys.list_keys``).
_LIST_MARGIN = 256
#: DUMP key + PTTL key, formatted with (len, key, len, key).
_DUMP_PTTL = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"
#: MEMORY USAGE key (sampled: O(1) for every type), formatted with (len, key).
_MEMORY_USAGE = b"*3\r\n$6\r\nMEMORY\r\n$5\r\nUSAGE\r\n$%d\r\n%b\r\n"
#: The element count of a key, per type that moves in pieces.
_LENGTH = {"hash": b"HLEN", "list": b"LLEN", "set": b"SCARD", "zset": b"ZCARD", "string": b"STRLEN"}
_SCAN = {"hash": b"HSCAN", "set": b"SSCAN", "zset": b"ZSCAN"}

#: The PTTL a copy batch reports for a key it did not DUMP because its estimate is above the
#: chunk size (PTTL itself answers -2 for a missing key and -1 for one without expiry).
BIG = -3
#: Lua: the copy's reads of a batch of keys in one call (no Python per key at the source:
#: one command out, one flat reply parsed by hiredis). ARGV: chunk bytes, batch bytes, keys.
#: Per key, in order, until the DUMPs reach the batch bytes: its DUMP payload (nil: none)
#: and its PTTL (-2: gone, BIG: estimated above the chunk size, so not DUMPed: it moves in
#: pieces). The first element is how many keys were answered. ``MEMORY USAGE`` comes first,
#: so a big key is never DUMPed in one command. The keys are ARGV, not KEYS (they span the
#: slots of a wave): legal for keys this node serves with ``allow-cross-slot-keys``.
COPY_SCRIPT = (
    b"""#!lua flags=no-writes,allow-cross-slot-keys
local chunk, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {0}
local total, n = 0, 0
for i = 3, #ARGV do
  local k = ARGV[i]
  n = n + 1
  local size = redis.call('MEMORY', 'USAGE', k)
  if not size then
    out[#out + 1] = false
    out[#out + 1] = -2
  elseif size > chunk then
    out[#out + 1] = false
    out[#out + 1] = %d
  else
    local d = redis.call('DUMP', k)
    out[#out + 1] = d
    out[#out + 1] = redis.call('PTTL', k)
    if d then total = total + #d end
    if total >= limit then break end
  end
end
out[1] = n
return out
"""
    % BIG
)
COPY_SCRIPT_SHA = hashlib.sha1(COPY_SCRIPT).hexdigest().encode()
#: Lua: the keys of many slots counted in one call (ARGV: the slots); their sum.
COUNT_SCRIPT = b"""#!lua flags=no-writes,allow-cross-slot-keys
local total = 0
for i = 1, #ARGV do
  total = total + redis.call('CLUSTER', 'COUNTKEYSINSLOT', tonumber(ARGV[i]))
end
return total
"""
#: Keys one call of LIST_SCRIPT lists at most (a slot with more is listed by plain commands:
#: a script holds its listing in Lua tables too, so Redis would run it for longer).
LIST_IN_SCRIPT_MAX = 8192
#: Lua: the keys of many slots listed in one call (ARGV: the most keys it lists, then the
#: slots). Per slot its keys, or its count where listing it would pass that many. Counted and
#: listed in one atomic step, so a count is exact: no key (nor request-id record) can arrive
#: in between.
LIST_SCRIPT = b"""#!lua flags=no-writes,allow-cross-slot-keys
local left = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local slot = tonumber(ARGV[i])
  local n = redis.call('CLUSTER', 'COUNTKEYSINSLOT', slot)
  if n == 0 then
    out[i - 1] = {}
  elseif n > left then
    out[i - 1] = n
  else
    out[i - 1] = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, n)
    left = left - n
  end
end
return out
"""
#: Slots counted per call of COUNT_SCRIPT (Redis runs nothing else meanwhile: ~1 ms each).
_COUNT_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class CopyLimits:
    """Bytes of DUMP payloads per copy message, and the size from which a key moves in pieces
    of about that many bytes (see ``AgentConfig.copy_batch_bytes``)."""

    batch_bytes: int = 4 << 20
    chunk_bytes: int = 1 << 20


class SourceKeys:
    def __init__(self, redis_target: RedisTarget | None, limits: CopyLimits | None = None) -> None:
        self._redis_target = redis_target
        self.limits = limits or CopyLimits()
        self._conn: RespConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection(self) -> RespConnection:
        """A raw RESP connection of its own for DUMP / PTTL and key listing (hiredis, no
        per-command objects: the copy's per-key cost at the source), opened on first use and
        after a drop."""
        conn = self._conn
        if conn is None or not conn.is_open:
            if self._redis_target is None:
                raise StepFailed("no Redis target to copy from")
            conn = self._conn = await RespConnection.open(
                self._redis_target, name="netmigrate-agent-copy"
            )
        return conn

    async def copy_replies(self, keys: list[bytes]) -> tuple[int, list[Any]]:
        """The first keys of ``keys`` whose DUMPs fill about ``batch_bytes`` (at least one
        key), read in one script call (:data:`COPY_SCRIPT`): (how many, their replies as
        ``add_dumps`` takes them, a key above ``chunk_bytes`` with no payload and pttl BIG)."""
        if not keys:
            return 0, []
        limits = self.limits
        call = command_of(
            [
                b"EVALSHA",
                COPY_SCRIPT_SHA,
                b"0",
                b"%d" % limits.chunk_bytes,
                b"%d" % limits.batch_bytes,
                *keys,
            ]
        )
        conn = await self._connection()
        (reply,) = await conn.calls(call, 1)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # Redis restarted or its scripts were flushed since this connection loaded it.
            await self._send(resp_command(b"SCRIPT", b"LOAD", COPY_SCRIPT), 1)
            (reply,) = await conn.calls(call, 1)
        if isinstance(reply, Exception):
            raise StepFailed(f"the copy script failed: Redis: {reply}")
        return int(reply[0]), reply[1:]

    async def count_keys(self, slots: list[int]) -> int:
        """The keys of ``slots`` in all (reserved ones included): a script call per
        _COUNT_CHUNK slots, pipelined (no per-slot command for Python to build and parse)."""
        calls = [
            command_of(
                [b"EVAL", COUNT_SCRIPT, b"0", *[b"%d" % s for s in slots[i : i + _COUNT_CHUNK]]]
            )
            for i in range(0, len(slots), _COUNT_CHUNK)
        ]
        return sum(int(n) for n in await self.calls(calls))

    async def calls(self, commands: list[bytes]) -> list[Any]:
        """Commands on the raw connection, pipelined; their replies (an error raises)."""
        return await self._send(b"".join(commands), len(commands))

    async def _send(self, payload: bytes, n: int) -> list[Any]:
        """``n`` commands in ``payload`` on the raw connection; their replies."""
        if not n:
            return []
        conn = await self._connection()
        replies = await conn.calls(payload, n)
        for reply in replies:
            if isinstance(reply, Exception):
                raise StepFailed(f"Redis: {reply}")
        return replies

    async def list_keys(self, slots: list[int]) -> list[list[bytes]]:
        """The (non-reserved) keys of each slot: script calls (:data:`LIST_SCRIPT`) of up to
        LIST_IN_SCRIPT_MAX keys each, plain commands for a slot with more."""
        listed: dict[int, list[bytes]] = {}
        todo = slots
        while todo:
            call = command_of(
                [b"EVAL", LIST_SCRIPT, b"0", b"%d" % LIST_IN_SCRIPT_MAX, *[b"%d" % s for s in todo]]
            )
            (replies,) = await self.calls([call])
            left: list[int] = []
            big: list[int] = []
            for s, r in zip(todo, replies, strict=True):
                if not isinstance(r, int):
                    listed[s] = [k for k in r if not is_reserved(k)]
                else:  # not listed: over what one call lists, or what was left of it
                    (big if r > LIST_IN_SCRIPT_MAX else left).append(s)
            listed.update(zip(big, await self._list_by_commands(big), strict=True))
            todo = left
        return [listed[s] for s in slots]

    async def _list_by_commands(self, slots: list[int]) -> list[list[bytes]]:
        """The (non-reserved) keys of each slot, in pipelined round trips on the raw
        connection: ``COUNTKEYSINSLOT``, then ``GETKEYSINSLOT`` asking for more than counted,
        again (asking for twice as many) for any slot whose answer came back full.

        The slots are frozen (or moved), so no client key is added to them. Reserved keys
        are: the reserved slot is a slot of the keyspace too, and every write adds a
        request-id record to it (D16). Listing exactly the count would then leave out as
        many client keys as records were added since, and those keys would not be copied.
        """
        if not slots:
            return []
        counts = [
            int(n)
            for n in await self.calls(
                [resp_command(b"CLUSTER", b"COUNTKEYSINSLOT", s) for s in slots]
            )
        ]
        want = {s: n + _LIST_MARGIN for s, n in zip(slots, counts, strict=True) if n}
        listed: dict[int, list[bytes]] = {}
        while want:
            replies = await self.calls(
                [resp_command(b"CLUSTER", b"GETKEYSINSLOT", s, n) for s, n in want.items()]
            )
            again: dict[int, int] = {}
            for (s, n), keys in zip(want.items(), replies, strict=True):
                if len(keys) >= n:
                    again[s] = 2 * n
                else:
                    listed[s] = [k for k in keys if not is_reserved(k)]
            want = again
        return [listed.get(s, []) for s in slots]

    async def dump(self, keys: Iterable[bytes]) -> list[control_pb2.KeyDump]:
        keys = list(keys)
        out = control_pb2.CopyPart()
        add_dumps(out.keys, keys, await self.dump_replies(keys))
        return list(out.keys)

    async def dump_replies(self, keys: list[bytes]) -> list[Any]:
        """DUMP and PTTL of each key, one round trip: payload, pttl, payload, pttl, ...
        (see ``add_dumps``)."""
        if not keys:
            return []
        try:
            return await self._send(
                b"".join([_DUMP_PTTL % (len(k), k, len(k), k) for k in keys]), 2 * len(keys)
            )
        except StepFailed as e:
            raise StepFailed(f"DUMP / PTTL failed: {e}") from None

    async def sizes(self, keys: list[bytes]) -> list[int]:
        """Each key's memory estimate in bytes (0: the key does not exist), one round trip;
        read before any DUMP so that a big key is never DUMPed in one command."""
        if not keys:
            return []
        replies = await self._send(b"".join([_MEMORY_USAGE % (len(k), k) for k in keys]), len(keys))
        return [int(r or 0) for r in replies]

    async def pieces(self, slot: int, key: bytes) -> AsyncIterator[control_pb2.KeyChunk]:
        """A key of a frozen slot in pieces of about ``chunk_bytes``: each one a short command
        at the source (HSCAN / SSCAN / ZSCAN / LRANGE / GETRANGE), never one DUMP of the whole
        key, then a last piece with its TTL. The slot is frozen, so the key changes only by
        expiring (the last piece then says it is gone). A type that cannot be rebuilt from
        pieces (a stream, a module type) yields nothing: the caller DUMPs it."""
        kind_reply, size = await self.calls(
            [resp_command(b"TYPE", key), resp_command(b"MEMORY", b"USAGE", key)]
        )
        kind = kind_reply.decode() if isinstance(kind_reply, bytes) else str(kind_reply)
        verb = _LENGTH.get(kind)
        if verb is None:
            return
        (length,) = await self.calls([resp_command(verb, key)])
        chunk = self.limits.chunk_bytes
        # Elements per piece from the average element's size (strings: bytes per piece).
        count = chunk if kind == "string" else max(1, chunk * length // max(int(size or 0), 1))
        part = 0

        def piece(items: list[bytes]) -> control_pb2.KeyChunk:
            return control_pb2.KeyChunk(slot=slot, key=key, type=kind, part=part, items=items)

        if kind in _SCAN:
            cursor = b"0"
            while True:
                (reply,) = await self.calls(
                    [resp_command(_SCAN[kind], key, cursor, b"COUNT", count)]
                )
                cursor, items = reply[0], list(reply[1])
                if kind == "zset":  # ZSCAN: member, score; ZADD takes score, member
                    items = [x for pair in zip(items[1::2], items[::2], strict=True) for x in pair]
                if items or part == 0:
                    yield piece(items)
                    part += 1
                if cursor in (b"0", 0):
                    break
        else:
            cmd = b"LRANGE" if kind == "list" else b"GETRANGE"
            for start in range(0, max(int(length), 1), count):
                (items,) = await self.calls([resp_command(cmd, key, start, start + count - 1)])
                yield piece(list(items) if kind == "list" else [items])
                part += 1
        pttl, exists = await self.calls([resp_command(b"PTTL", key), resp_command(b"EXISTS", key)])
        yield control_pb2.KeyChunk(
            slot=slot,
            key=key,
            type=kind,
            part=part,
            last=True,
            pttl=ttl_from_pttl(pttl),
            present=bool(exists) and pttl != -2,
        )


def add_dumps(into: Any, keys: list[bytes], replies: list[Any], start: int = 0) -> None:
    """Add a KeyDump per key to ``into`` (a repeated KeyDump field) from ``replies`` of
    ``dump_replies`` (from the key at ``start`` of them on), in place: a copy batch is built
    without a message per key that is then copied into it."""
    add = into.add
    i = 2 * start
    for k in keys:
        payload, pttl = replies[i], replies[i + 1]
        i += 2
        if payload is None or pttl == -2:
            add(key=k, present=False)
        else:
            add(key=k, dump=payload, pttl=ttl_from_pttl(pttl), present=True)
