"""The agent's own keys in its Redis, out of reach of clients.

Two families of reserved keys:

- ``{__netmigrate__}:...`` (:data:`RESERVED_PREFIX`): the agent's identity, ownership and
  migration records. The ``{hashtag}`` puts all of them in one slot (:data:`RESERVED_SLOT`), so
  they can be read and written together (one MULTI) in cluster mode.
- ``__netmigrate__:{tag}:...`` (:data:`SLOT_KEY_PREFIX`): per-slot bookkeeping of a migration
  target (the dirty set, the "migrating in" marker). ``tag`` is a precomputed string that hashes
  to the slot (:func:`slot_tag`), so the bookkeeping lives *in* the slot it describes and a
  client write and its dirty mark are one single-slot MULTI/EXEC.

Client requests naming a key with either prefix are refused with BAD_REQUEST; a migration
skips these keys (they describe *this* server, not the keyspace). See D8 and D10 in
docs/decisions.md.
"""

from __future__ import annotations

import functools

from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot

RESERVED_PREFIX = b"{__netmigrate__}:"
RESERVED_SLOT = key_slot(RESERVED_PREFIX)
SLOT_KEY_PREFIX = b"__netmigrate__:"
#: Every reserved prefix, for ``bytes.startswith``.
RESERVED_PREFIXES = (RESERVED_PREFIX, SLOT_KEY_PREFIX)
#: What a client is told when a request names a reserved key.
RESERVED_MESSAGE = "keys starting with {} or {} are reserved".format(
    *(p.decode() for p in RESERVED_PREFIXES)
)

#: Hash with the agent's identity and owned slots (see ``slot_store``).
AGENT_STATE_KEY = RESERVED_PREFIX + b"agent"
#: Written once when the agent starts and never again while it runs: its absence means Redis
#: lost the agent's data. Not the state key, which every persisted change writes (and would
#: bring back, hiding the loss, if a change came between the loss and the check; #12.8).
AGENT_ALIVE_KEY = RESERVED_PREFIX + b"alive"
#: Hash: slot number -> JSON record of that slot's migration (either role).
SLOT_RECORDS_KEY = RESERVED_PREFIX + b"slots"
#: Hash: migration id -> JSON record of a migration this agent is the source of.
MIGRATIONS_KEY = RESERVED_PREFIX + b"migrations"
#: Hash: slot number -> the highest transition epoch this agent used or accepted for the slot
#: (docs/decisions.md "Transition epochs"); kept after the slot's record is gone.
EPOCHS_KEY = RESERVED_PREFIX + b"epochs"
#: Strings ``<prefix><request id as 16 hex digits>``: the record of a write this agent applied,
#: written by the same script as the write and expired by Redis (see ``dedup``, D16).
REQUEST_ID_PREFIX = RESERVED_PREFIX + b"rid:"


def request_id_key(request_id: int) -> bytes:
    return REQUEST_ID_PREFIX + b"%016x" % request_id


def is_reserved(key: bytes) -> bool:
    return key.startswith(RESERVED_PREFIXES)


@functools.cache
def _slot_tags() -> tuple[bytes, ...]:
    # Short tags found by counting in base 36: all 16384 slots are covered by 3-character
    # strings, and crc_hqx makes the search take a few tens of milliseconds, once.
    tags: list[bytes | None] = [None] * SLOT_COUNT
    missing = SLOT_COUNT
    alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz"
    for length in range(1, 5):
        for n in range(len(alphabet) ** length):
            chars = bytearray()
            for _ in range(length):
                n, r = divmod(n, len(alphabet))
                chars.append(alphabet[r])
            tag = bytes(chars)
            slot = key_slot(tag)
            if tags[slot] is None:
                tags[slot] = tag
                missing -= 1
                if not missing:
                    return tuple(tags)  # type: ignore[arg-type]
    raise AssertionError("no tag found for some slot")  # pragma: no cover


def slot_tag(slot: int) -> bytes:
    """A short string whose CRC16 hash is ``slot`` (usable as ``{tag}``)."""
    return _slot_tags()[slot]


def dirty_key(slot: int) -> bytes:
    """The set of keys a migration target wrote or deleted in ``slot`` (in ``slot`` itself)."""
    return SLOT_KEY_PREFIX + b"{" + slot_tag(slot) + b"}:dirty"


def marker_key(slot: int) -> bytes:
    """Exists while ``slot`` migrates in: copies and pulls are restored only while it does."""
    return SLOT_KEY_PREFIX + b"{" + slot_tag(slot) + b"}:in"
