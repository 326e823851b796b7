"""The double-read merge of DESIGN section 6, as a pure function.

While a slot migrates, the switch sends a read both to the owner (A) and to the migration
target (B, flag TO_TARGET); both copies carry DOUBLE_READ, so two replies come for one request
id. B's answer wins when it is authoritative (OK or NOT_FOUND: B has the key's current state);
B's MISS (or any other non-authoritative answer) means "ask A", and A's copy is frozen since the
migration started, so A's answer is then current. A's answer alone is never enough: B may hold
a newer write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netmigrate.protocol.constants import Status

AUTHORITATIVE = frozenset({int(Status.OK), int(Status.NOT_FOUND)})


@dataclass(frozen=True, slots=True)
class Reply:
    """What the merge needs of one reply copy."""

    status: int
    body: Any


def merge_double_read(owner: Reply | None, target: Reply | None) -> Reply | None:
    """The answer to use, or None to wait for the other copy.

    ``owner``: the copy without TO_TARGET; ``target``: the copy with TO_TARGET; None when that
    copy has not arrived (yet).
    """
    if target is None:
        return None
    if target.status in AUTHORITATIVE:
        return target
    return owner
