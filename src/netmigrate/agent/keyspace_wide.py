"""Keyspace-wide commands at one server (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL, FLUSHDB,
FUNCTION FLUSH, CONFIG GET / SET): this server's part of the answer, which the gateway merges
over every server of the keyspace (docs/compatibility.md says what they mean during a
migration).

A request carrying one of these is sent to each server's agent directly (not steered by slot)
and is not admitted by slot: it is about the whole of this server's Redis. What it answers
never shows the agent's own keys (:mod:`netmigrate.agent.reserved`), and a flush keeps them.
A flush is refused while any slot of this server migrates: it would delete what a migration is
copying, and the two sides would disagree on which keys exist.

CONFIG is served for the options that shape how values are stored (encoding thresholds and
the like) and for ``save`` (the snapshot schedule, one policy for the whole keyspace): they
mean the same on every server, and setting them everywhere is what a client of one Redis
expects. Other options (paths, limits, replication, secrets) belong to each server and its
operator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netmigrate.agent.reserved import RESERVED_PREFIXES
from netmigrate.rediscmd.resp import Error, encode

#: Options CONFIG GET / SET may name through NetMigrate.
SHARED_OPTIONS = re.compile(
    rb"^(?:(?:hash|list|set|zset|stream)-(?:max|node-max)-[a-z-]+|list-compress-depth"
    rb"|hll-sparse-max-bytes|lazyfree-lazy-[a-z-]+|active-expire-effort|save)$"
)

# Lua helpers: is a key one of the agent's own?
_RESERVED_LUA = b"""
local function reserved(k)
  return %s
end
""" % b" or ".join(b"string.sub(k, 1, %d) == '%s'" % (len(p), p) for p in RESERVED_PREFIXES)

_ENC_ARRAY = b"""
local function arr(t)
  local out = {'*' .. #t .. '\\r\\n'}
  for i = 1, #t do out[i + 1] = '$' .. #t[i] .. '\\r\\n' .. t[i] .. '\\r\\n' end
  return table.concat(out)
end
"""

# Shebang flags: these scripts name no keys and touch keys of every slot.
_READS = b"#!lua flags=no-writes,allow-cross-slot-keys\n"
_WRITES = b"#!lua flags=allow-cross-slot-keys\n"

KEYS_SCRIPT = (
    _READS
    + _RESERVED_LUA
    + _ENC_ARRAY
    + b"""
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  if not reserved(k) then out[#out + 1] = k end
end
return arr(out)
"""
)

SCAN_SCRIPT = (
    _READS
    + _RESERVED_LUA
    + _ENC_ARRAY
    + b"""
local r = redis.call('SCAN', unpack(ARGV))
local out = {}
for _, k in ipairs(r[2]) do
  if not reserved(k) then out[#out + 1] = k end
end
return '*2\\r\\n$' .. #r[1] .. '\\r\\n' .. r[1] .. '\\r\\n' .. arr(out)
"""
)

# Counted from KEYS, not DBSIZE minus the agent's keys: DBSIZE also counts keys that expired
# and were not reclaimed yet (the agent's write records expire by the thousand), KEYS does not.
DBSIZE_SCRIPT = (
    _READS
    + _RESERVED_LUA
    + b"""
local n = 0
for _, k in ipairs(redis.call('KEYS', '*')) do
  if not reserved(k) then n = n + 1 end
end
return ':' .. n .. '\\r\\n'
"""
)

RANDOMKEY_SCRIPT = (
    _READS
    + _RESERVED_LUA
    + b"""
for i = 1, 16 do
  local k = redis.call('RANDOMKEY')
  if not k then return '$-1\\r\\n' end
  if not reserved(k) then return '$' .. #k .. '\\r\\n' .. k .. '\\r\\n' end
end
local c = '0'
repeat
  local r = redis.call('SCAN', c, 'COUNT', 1000)
  c = r[1]
  for _, k in ipairs(r[2]) do
    if not reserved(k) then return '$' .. #k .. '\\r\\n' .. k .. '\\r\\n' end
  end
until c == '0'
return '$-1\\r\\n'
"""
)

FLUSH_SCRIPT = (
    _WRITES
    + _RESERVED_LUA
    + b"""
local c = '0'
repeat
  local r = redis.call('SCAN', c, 'COUNT', 1000)
  c = r[1]
  -- One DEL per key: a cluster-mode Redis refuses one command on keys of several slots.
  for _, k in ipairs(r[2]) do
    if not reserved(k) then redis.call('DEL', k) end
  end
until c == '0'
return '+OK\\r\\n'
"""
)

#: The keyspace-wide commands served, lower case: whether each writes.
SERVED = {
    b"keys": False,
    b"scan": False,
    b"dbsize": False,
    b"randomkey": False,
    b"flushall": True,
    b"flushdb": True,
    b"function": True,  # FUNCTION FLUSH only
    b"config": False,  # CONFIG GET reads; CONFIG SET is checked as a write below
}


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def _array(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n%b" % (len(args), b"".join(map(_bulk, args)))


def _eval(script: bytes, argv: Sequence[bytes]) -> bytes:
    return _array((b"EVAL", script, b"0", *argv))


@dataclass(frozen=True)
class WideCall:
    """What to send to Redis for a keyspace-wide command, and how its reply becomes RESP:
    ``raw`` replies are Redis' parsed values (re-encoded), script replies are RESP text."""

    command: bytes
    raw: bool
    writes: bool
    flush: bool = False


class WideRefused(Exception):
    """A keyspace-wide command this server will not run; ``reply`` is the RESP error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = encode(Error(message))


def is_keyspace_wide(args: Sequence[bytes]) -> bool:
    """Whether a request's command is one of the keyspace-wide commands served here."""
    if not args:
        return False
    name = args[0].lower()
    if name not in SERVED:
        return False
    if name == b"function":
        return len(args) >= 2 and args[1].lower() == b"flush"
    if name == b"config":
        return len(args) >= 2 and args[1].lower() in (b"get", b"set")
    return True


def _wrong_args(name: str) -> WideRefused:
    return WideRefused(f"ERR wrong number of arguments for '{name}' command")


def wide_call(args: Sequence[bytes]) -> WideCall:
    """The call to this server's Redis for a keyspace-wide command (see :func:`is_keyspace_wide`);
    raises :class:`WideRefused` for what is not served."""
    name = args[0].lower()
    if name == b"keys":
        if len(args) != 2:
            raise _wrong_args("keys")
        return WideCall(_eval(KEYS_SCRIPT, args[1:]), False, False)
    if name == b"scan":
        if len(args) < 2:
            raise _wrong_args("scan")
        return WideCall(_eval(SCAN_SCRIPT, args[1:]), False, False)
    if name == b"dbsize":
        if len(args) != 1:
            raise _wrong_args("dbsize")
        return WideCall(_eval(DBSIZE_SCRIPT, ()), False, False)
    if name == b"randomkey":
        if len(args) != 1:
            raise _wrong_args("randomkey")
        return WideCall(_eval(RANDOMKEY_SCRIPT, ()), False, False)
    if name in (b"flushall", b"flushdb"):
        if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"async", b"sync")):
            raise WideRefused("ERR syntax error")
        # The flush is done by a script (it keeps the agent's keys): synchronous either way.
        return WideCall(_eval(FLUSH_SCRIPT, ()), False, True, flush=True)
    sub = args[1].lower()
    if name == b"function":  # FUNCTION FLUSH [ASYNC|SYNC]
        return WideCall(_array(args), True, True)
    if sub == b"set":
        if len(args) < 4 or len(args) % 2:
            raise _wrong_args("config|set")
        for option in args[2::2]:
            if not SHARED_OPTIONS.match(option.lower()):
                raise WideRefused(
                    f"ERR CONFIG SET {option.decode(errors='replace')} is not served through "
                    "NetMigrate: only options that mean the same on every server are"
                )
        return WideCall(_array(args), True, True)
    if len(args) < 3:
        raise _wrong_args("config|get")
    return WideCall(_array(args), True, False)


def wide_reply(args: Sequence[bytes], call: WideCall, reply: Any) -> bytes:
    """The RESP reply from what Redis answered (not an exception: the caller handles those)."""
    if not call.raw:
        return bytes(reply)
    if args[1].lower() == b"get":
        # Only the shared options are shown: the rest (paths, secrets) are each server's.
        items = list(reply)
        shown: list[bytes] = []
        for i in range(0, len(items) - 1, 2):
            if SHARED_OPTIONS.match(items[i]):
                shown += [items[i], items[i + 1]]
        return encode(shown)
    return b"+OK\r\n" if reply in (b"OK", "OK") else encode(reply)
