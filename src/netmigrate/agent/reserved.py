"""The agent's own keys in its Redis, out of reach of clients.

Every reserved key starts with :data:`RESERVED_PREFIX`. Its ``{hashtag}`` puts all of them in
one slot (:data:`RESERVED_SLOT`), so they can be read and written together (one MULTI, one
MSET) in cluster mode. Client requests naming a key with this prefix are refused with
BAD_REQUEST; a migration of the reserved slot must skip these keys (they describe *this*
server, not the keyspace). See decision D4 in docs/decisions.md.
"""

from __future__ import annotations

from netmigrate.protocol.slot import key_slot

RESERVED_PREFIX = b"{__netmigrate__}:"
RESERVED_SLOT = key_slot(RESERVED_PREFIX)

#: Hash with the agent's identity and owned slots (see ``slot_store``).
AGENT_STATE_KEY = RESERVED_PREFIX + b"agent"


def is_reserved(key: bytes) -> bool:
    return key.startswith(RESERVED_PREFIX)
