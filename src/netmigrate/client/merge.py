"""The double-read merge of DESIGN section 6, as a pure function.

While a slot migrates, the switch sends a read both to the owner (A) and to the migration
target (B, flag TO_TARGET); both copies carry DOUBLE_READ, so two replies come for one request
id. B's answer wins when it is authoritative (OK or NOT_FOUND: B has the key's current state).
Only B's MISS means "ask A": B then holds nothing newer than A's copy, which is frozen since the
migration started, so A's answer is current. Any other answer from B (BUSY, ERROR, WRONG_OWNER,
...) says nothing about what B holds: B may have acknowledged a newer write that it cannot read
back right now (its Redis connection dropped), so A's frozen copy could be stale. That answer
is the result, and the client retries it (:data:`RETRY_FROM_TARGET`). A's answer alone is never
enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netmigrate.protocol.constants import Status

AUTHORITATIVE = frozenset({int(Status.OK), int(Status.NOT_FOUND)})
_MISS = int(Status.MISS)

#: B's answers to a double read that the client retries: B may hold a newer write it could
#: not serve. ERROR is among them although it is final elsewhere: B's Redis failing a read
#: says nothing about the key, and a retry goes through both servers again.
RETRY_FROM_TARGET = frozenset(int(s) for s in (Status.WRONG_OWNER, Status.BUSY, Status.ERROR))


@dataclass(frozen=True, slots=True)
class Reply:
    """What the merge needs of one reply copy."""

    status: int
    body: Any


def merge_double_read(owner: Reply | None, target: Reply | None) -> Reply | None:
    """The answer to use, or None to wait for the other copy.

    ``owner``: the copy without TO_TARGET; ``target``: the copy with TO_TARGET; None when that
    copy has not arrived (yet). Only a MISS from the target selects the owner's copy; any
    other target answer is the result (the caller retries those in :data:`RETRY_FROM_TARGET`).
    """
    if target is None:
        return None
    if target.status == _MISS:
        return owner
    return target
