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

from netmigrate.agent.reserved import dirty_key, marker_key
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
