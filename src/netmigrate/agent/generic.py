"""Generic Redis commands at the agent (CMD_READ / CMD_WRITE, DESIGN section 11).

A generic request carries Redis commands on keys of one slot. The agent finds their keys and
whether they write from *its own Redis'* command table (``COMMAND``, read once at connect), so a
request that calls itself a read but would write is refused, and the keys it checks (slot,
reserved prefixes) are the keys Redis will touch.

Each request runs as one Lua script, for two reasons:

- a write must be applied, recorded under its request id (D16: at-most-once across an agent
  restart) and, at a migration target, marked dirty *in one step*: the script does all three,
  and a retry of a recorded id gets the recorded reply instead of a second application;
- the reply must reach the client as the RESP bytes Redis would have sent, while the data path
  parses replies with hiredis (which does not keep them). The script writes the reply as RESP
  text (:data:`_ENCODE`), so the agent forwards it untouched.

Scripts run with RESP2 semantics (``redis.setresp(2)``): RESP3's null inside an array turns into
a hole of a Lua table, so a RESP3 reply cannot make the trip faithfully. Two small differences
from a plain Redis connection remain and are documented (docs/compatibility.md): a null array
(``*-1``) comes back as a null bulk (``$-1``), and an integer reply above 2^53 loses its low
digits (Lua numbers are doubles; Redis' own scripts have the same limit). Commands Redis does
not allow in scripts (``noscript``: EVAL, EVALSHA, FCALL, WATCH ...) cannot be sent this way.
Only keys of commands that succeeded are marked dirty: a failed write changed nothing, and a
dirty mark on it would stop the copy from bringing the source's value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from netmigrate.rediscmd.table import Classified, CommandError, CommandTable, Kind

#: Lua: one RESP2 reply, as text, from what ``redis.pcall`` returned.
_ENCODE = b"""
local function enc(v)
  local t = type(v)
  if t == 'string' then return '$' .. #v .. '\\r\\n' .. v .. '\\r\\n' end
  if t == 'number' then return ':' .. string.format('%d', v) .. '\\r\\n' end
  if t == 'table' then
    if v.err then return '-' .. v.err .. '\\r\\n' end
    if v.ok then return '+' .. v.ok .. '\\r\\n' end
    local out = {'*' .. #v .. '\\r\\n'}
    for i = 1, #v do out[i + 1] = enc(v[i]) end
    return table.concat(out)
  end
  if v == true then return ':1\\r\\n' end
  return '$-1\\r\\n'
end
"""

#: ARGV: the number of commands, then per command its argument count and its arguments.
#: Returns their replies as RESP text, one after another (a client's pipeline batch).
READ_SCRIPT = (
    b"#!lua flags=no-writes,allow-cross-slot-keys\n"
    + _ENCODE
    + b"""
local n, pos, out = tonumber(ARGV[1]), 2, {}
for c = 1, n do
  local argc = tonumber(ARGV[pos])
  out[c] = enc(redis.pcall(unpack(ARGV, pos + 1, pos + argc)))
  pos = pos + 1 + argc
end
return table.concat(out)
"""
)

#: ARGV: record key, TTL ms, reply header (HEADER_LEN bytes), dirty set or "", number of
#: commands, "1" for a transaction, then per command: its key count, its argument count, its
#: arguments (its keys are the next ones of KEYS). Returns ``{1, record}`` when the request id
#: is recorded already, else ``{0, reply, key, ...}``: the RESP reply (EXEC's array for a
#: transaction, the replies one after another for a pipeline batch) and the keys it marked
#: dirty. A request none of whose commands succeeded (outside a transaction) records nothing
#: and marks nothing: Redis applied nothing, and a retry may succeed.
WRITE_SCRIPT = (
    b"#!lua flags=allow-cross-slot-keys\n"
    + _ENCODE
    + b"""
local old = redis.call('GET', ARGV[1])
if old then return {1, old} end
local n, transaction = tonumber(ARGV[5]), ARGV[6] == '1'
local pos, k = 7, 1
local replies, marked = {}, {}
local applied = false
for c = 1, n do
  local nkeys, argc = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  local r = redis.pcall(unpack(ARGV, pos + 2, pos + 1 + argc))
  local failed = type(r) == 'table' and r.err ~= nil
  if not failed then
    applied = true
    for i = k, k + nkeys - 1 do marked[#marked + 1] = KEYS[i] end
  end
  replies[c] = enc(r)
  pos, k = pos + 2 + argc, k + nkeys
end
local out = table.concat(replies)
if transaction then out = '*' .. n .. '\\r\\n' .. out end
if not applied and not transaction then return {0, out} end
if ARGV[4] ~= '' and #marked > 0 then
  for i = 1, #marked, 4000 do
    redis.call('SADD', ARGV[4], unpack(marked, i, math.min(i + 3999, #marked)))
  end
end
redis.call('SET', ARGV[1], 'd' .. ARGV[3] .. struct.pack('>I4', #out) .. out, 'PX', ARGV[2])
local answer = {0, out}
for i = 1, #marked do answer[i + 2] = marked[i] end
return answer
"""
)

READ_SCRIPT_SHA = hashlib.sha1(READ_SCRIPT).hexdigest().encode()
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT).hexdigest().encode()


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def _array(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n%b" % (len(args), b"".join(map(_bulk, args)))


SCRIPT_LOADS = (
    _array((b"SCRIPT", b"LOAD", READ_SCRIPT)),
    _array((b"SCRIPT", b"LOAD", WRITE_SCRIPT)),
)


class GenericRefused(Exception):
    """A generic request the agent will not run; ``message`` says why (BAD_REQUEST)."""

    def __init__(self, message: str, crossslot: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.crossslot = crossslot


@dataclass(frozen=True)
class GenericRequest:
    """What the agent found in a generic request: its commands classified, and its keys."""

    commands: tuple[tuple[bytes, ...], ...]
    classified: tuple[Classified, ...]
    transaction: bool

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(k for c in self.classified for k in c.keys)

    @property
    def writes(self) -> bool:
        return any(c.kind is Kind.WRITE for c in self.classified)

    def keys_needing_old_value(self) -> tuple[bytes, ...]:
        """Keys a migration target must pull before running this: every key it names.

        Key-spec flags do not say whether a command's *reply* depends on the old value: DEL
        (``RM``) counts the keys that existed, SETNX / MSETNX / RENAMENX (``OW insert``) do
        nothing when the key exists, COPY and RESTORE (``OW``) fail on an existing key
        without REPLACE. Run without the key, each would answer (or do) what the source's
        value contradicts, so no key is skipped; a pull costs one round trip, and only for a
        key the target is not authoritative for yet."""
        return tuple(dict.fromkeys(self.keys))


class GenericCommands:
    """Checks generic requests against the table of this agent's Redis and builds the scripts'
    calls (raw RESP, as the data path sends them)."""

    def __init__(self, table: CommandTable, record_ttl_ms: int) -> None:
        self.table = table
        self._ttl = b"%d" % record_ttl_ms

    def check(
        self, commands: Sequence[tuple[bytes, ...]], transaction: bool, write_op: bool, slot: int
    ) -> GenericRequest:
        """Classify; raises :class:`GenericRefused` for anything the request may not do."""
        classified = []
        for args in commands:
            try:
                c = self.table.classify(args)
            except CommandError as e:
                raise GenericRefused(e.message, e.message.startswith("CROSSSLOT")) from None
            if c.kind is Kind.UNSUPPORTED:
                raise GenericRefused(f"ERR {c.reason}")
            if c.kind is Kind.FANOUT:
                raise GenericRefused(f"ERR {c.spec.name.upper()} is not a command of one slot")
            if "noscript" in c.spec.flags:
                raise GenericRefused(
                    f"ERR {c.spec.name.upper()} cannot run inside a NetMigrate request"
                )
            if c.kind is Kind.WRITE and not write_op:
                raise GenericRefused(
                    f"ERR {c.spec.name.upper()} writes: it must be sent as a write request"
                )
            classified.append(c)
        slots = {c.slot for c in classified if c.slot is not None}
        if len(slots) > 1:
            raise GenericRefused("CROSSSLOT Keys in request don't hash to the same slot", True)
        if slots and slots != {slot}:
            raise GenericRefused(
                f"ERR slot {slot} in the header, but the keys hash to {slots.pop()}"
            )
        return GenericRequest(tuple(commands), tuple(classified), transaction)

    def read_call(self, request: GenericRequest) -> bytes:
        """EVALSHA of the read script for the request's read commands."""
        keys = request.keys
        argv: list[bytes] = [b"%d" % len(request.commands)]
        for args in request.commands:
            argv.append(b"%d" % len(args))
            argv.extend(args)
        return _array((b"EVALSHA", READ_SCRIPT_SHA, b"%d" % len(keys), *keys, *argv))

    def write_call(
        self,
        request: GenericRequest,
        record_key: bytes,
        reply_header: bytes,
        dirty: bytes | None,
    ) -> bytes:
        """EVALSHA of the write script: apply, record under ``record_key``, mark dirty."""
        keys: list[bytes] = []
        argv: list[bytes] = [
            record_key,
            self._ttl,
            reply_header,
            dirty or b"",
            b"%d" % len(request.commands),
            b"1" if request.transaction else b"0",
        ]
        for c, args in zip(request.classified, request.commands, strict=True):
            keys.extend(c.keys)
            argv.append(b"%d" % len(c.keys))
            argv.append(b"%d" % len(args))
            argv.extend(args)
        return _array((b"EVALSHA", WRITE_SCRIPT_SHA, b"%d" % len(keys), *keys, *argv))
