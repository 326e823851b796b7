"""WATCH through NetMigrate: the script that reads and checks the watched keys' fingerprints.

Redis' WATCH is per server and ``noscript``, and the server of a slot changes during a
migration, so the gateway keeps WATCH itself (D38: WATCH through the gateway): at WATCH it reads
a fingerprint of each key (an ``EVAL_RO`` of :data:`WATCH_SCRIPT` with ``get``, a read of the
keys' slot), and EXEC sends the transaction with the same script in ``check`` mode as its
first command; the agent's write script recognises it and answers EXEC's null reply, running
nothing, when a fingerprint changed. The script is the one definition both sides use.

A fingerprint is the SHA1 of the key's ``DUMP`` (its value and type, not its encoding's
history) and its absolute expiry (``PEXPIRETIME``): a write that leaves both as they were is
not seen as a change; ``''`` for a missing key.
"""

from __future__ import annotations

#: ``EVAL_RO WATCH_SCRIPT n key... get`` answers the keys' fingerprints; ``... check fp...``
#: answers 1 when every key still has its fingerprint, else 0.
WATCH_SCRIPT = b"""local function fp(k)
  local d = redis.call('DUMP', k)
  if not d then return '' end
  return redis.sha1hex(d) .. ':' .. redis.call('PEXPIRETIME', k)
end
if ARGV[1] == 'check' then
  for i = 1, #KEYS do
    if fp(KEYS[i]) ~= ARGV[i + 1] then return 0 end
  end
  return 1
end
local out = {}
for i = 1, #KEYS do out[i] = fp(KEYS[i]) end
return out
"""

#: Stands for a fingerprint that could not be read: it never matches, so EXEC aborts.
UNREAD = b"?"


def fingerprint_call(keys: list[bytes]) -> list[bytes]:
    """The read that answers ``keys``' fingerprints (an array of bulks, in order)."""
    return [b"EVAL_RO", WATCH_SCRIPT, b"%d" % len(keys), *keys, b"get"]


def check_call(watched: dict[bytes, bytes]) -> list[bytes]:
    """The first command of a watched transaction: 1 if nothing changed."""
    return [
        b"EVAL_RO",
        WATCH_SCRIPT,
        b"%d" % len(watched),
        *watched.keys(),
        b"check",
        *watched.values(),
    ]
