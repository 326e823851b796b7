"""Restore DUMP payloads at a migration target, never over a key the target wrote.

One server-side script restores a batch of keys of one slot atomically: it does nothing unless
the slot's "migrating in" marker exists (so a late copy or pull after the slot completed is a
no-op), and it skips every key in the slot's dirty set (a client wrote or deleted it at the
target: **writes win over copies**). The marker, the dirty set and the keys are all in the slot,
so the script is legal in cluster mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netmigrate.agent.reserved import SLOT_KEY_PREFIX, dirty_key, marker_key, slot_tag
from netmigrate.agent.resp import command_of

#: KEYS: marker, dirty set, key1..keyN; ARGV: ttl1, payload1, ..., ttlN, payloadN.
#: Returns {restored, skipped}, or {-1, 0} when the slot is not migrating in.
RESTORE_SCRIPT = b"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local restored, skipped = 0, 0
for i = 3, #KEYS do
  if redis.call('SISMEMBER', KEYS[2], KEYS[i]) == 1 then
    skipped = skipped + 1
  else
    redis.call('RESTORE', KEYS[i], ARGV[2 * i - 5], ARGV[2 * i - 4], 'REPLACE')
    restored = restored + 1
  end
end
return {restored, skipped}
"""


@dataclass(frozen=True, slots=True)
class Dump:
    """One key as the source has it: DUMP payload and remaining TTL (ms, 0 = none)."""

    key: bytes
    payload: bytes | None  # None: the key does not exist at the source
    pttl: int = 0


def ttl_from_pttl(pttl: int) -> int:
    """PTTL's answer as the TTL argument of RESTORE (0 = no expiry).

    -1 (no expiry) -> 0; 0 (expires this very millisecond) -> 1, since RESTORE's 0 would make
    the key immortal."""
    if pttl < 0:
        return 0
    return max(pttl, 1)


def script_args(slot: int, dumps: Sequence[Dump]) -> list[bytes]:
    """``numkeys key... arg...`` for EVAL of :data:`RESTORE_SCRIPT` (present keys only)."""
    present = [d for d in dumps if d.payload is not None]
    keys = [marker_key(slot), dirty_key(slot), *(d.key for d in present)]
    args: list[bytes] = []
    for d in present:
        args += [b"%d" % d.pttl, d.payload]  # type: ignore[list-item]
    return [b"%d" % len(keys), *keys, *args]


def eval_command(slot: int, dumps: Sequence[Dump]) -> bytes:
    """The RESP command (for the data-path connection)."""
    return command_of([b"EVAL", RESTORE_SCRIPT, *script_args(slot, dumps)])


# -- keys moved in pieces (too big for one DUMP / RESTORE) ----------------------------------

#: The command that appends a piece's items to the temporary key, per Redis type. A string
#: piece is one APPEND per item.
PIECE_COMMANDS = {
    "hash": b"HSET",
    "list": b"RPUSH",
    "set": b"SADD",
    "zset": b"ZADD",
    "string": b"APPEND",
}

#: KEYS: marker, dirty set, key, temporary key; ARGV: present (0/1), ttl (0 = none).
#: Renames the rebuilt key into place unless a client wrote the key here meanwhile (its value
#: wins) or the slot no longer migrates in; the temporary key never outlives the script.
#: Returns {1, 0} renamed, {0, 1} skipped as dirty, {0, 0} gone at the source, {-1, 0} not
#: migrating in. UNLINK frees a big old value in the background (no stall).
FINISH_SCRIPT = b"""
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('UNLINK', KEYS[4])
  return {-1, 0}
end
if redis.call('SISMEMBER', KEYS[2], KEYS[3]) == 1 then
  redis.call('UNLINK', KEYS[4])
  return {0, 1}
end
if ARGV[1] == '0' or redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('UNLINK', KEYS[4])
  return {0, 0}
end
redis.call('UNLINK', KEYS[3])
redis.call('RENAME', KEYS[4], KEYS[3])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return {1, 0}
"""


def piece_key(slot: int, key: bytes) -> bytes:
    """Where a key moved in pieces is rebuilt: a reserved key in the key's own slot (so the
    final RENAME is legal in cluster mode, and a migration never copies it)."""
    return SLOT_KEY_PREFIX + b"{" + slot_tag(slot) + b"}:piece:" + key


def piece_commands(
    slot: int, key: bytes, kind: str, part: int, items: Sequence[bytes]
) -> list[bytes]:
    """The commands that add one piece of ``key`` to its temporary key (the first piece starts
    a fresh one: a failed earlier attempt may have left a partial one)."""
    verb = PIECE_COMMANDS.get(kind)
    if verb is None:
        raise ValueError(f"cannot rebuild a key of type {kind!r} from pieces")
    if kind in ("hash", "zset") and len(items) % 2:
        raise ValueError(f"a {kind} piece needs pairs of items")
    temp = piece_key(slot, key)
    out = [command_of([b"UNLINK", temp])] if part == 0 else []
    if not items:
        return out
    if kind == "string":
        out += [command_of([verb, temp, item]) for item in items]
    else:
        out.append(command_of([verb, temp, *items]))
    return out


def finish_command(slot: int, key: bytes, present: bool, ttl: int) -> bytes:
    """The command that puts a key rebuilt from pieces into place (see :data:`FINISH_SCRIPT`)."""
    keys = [marker_key(slot), dirty_key(slot), key, piece_key(slot, key)]
    return command_of([b"EVAL", FINISH_SCRIPT, b"4", *keys, b"1" if present else b"0", b"%d" % ttl])
