"""What the target keeps per slot that migrates in, and its errors."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from netmigrate.protocol.codec import HeaderFields
from netmigrate.protocol.slotset import to_ranges

log = logging.getLogger(__name__)


class PullFailed(Exception):
    pass


class NotMigratingIn(Exception):
    """A copy, id transfer or pull for a slot that does not migrate in from that source."""


class TargetDataLost(NotMigratingIn):
    """The slot migrated in here, and this agent's Redis lost its data meanwhile: nothing sent
    before can be trusted, and the slot cannot complete here (#12.8)."""


@dataclass
class Held:
    since: float
    fields: HeaderFields
    data: bytes
    addr: Any


@dataclass(eq=False)
class Incoming:
    slot: int
    source_id: int
    started: float
    #: The migration's transition epoch: its START and COMPLETE carry it.
    epoch: int = 0
    ids_received: bool = False
    source_control: str = ""
    authoritative: set[bytes] = field(default_factory=set)
    held: deque[Held] = field(default_factory=deque)
    #: Done once MIGRATING_IN is persisted (the START may be acknowledged then).
    persisted: asyncio.Future[bool] | None = None
    #: Done once the slot is owned here (True) or its completion failed (False).
    completing: asyncio.Future[bool] | None = None
    #: Client writes (and deletes) queued for Redis since the START: a slot without any can
    #: be given back to the source (its frozen copy is then still the whole truth).
    writes: int = 0


@dataclass(frozen=True)
class LostSlot:
    """A slot that migrated in when this agent's Redis lost its data."""

    slot: int
    source_id: int
    #: Client writes queued here for it before (and after) the loss: lost or unvouched for.
    writes: int
    why: str


def log_slots(what: str, incs: list[Incoming]) -> None:
    """One line per source for slots handled together: a line per slot was 32,768 lines
    and ~2 % of the target agent's CPU (py-spy) for a whole-keyspace migration."""
    by_source: dict[int, list[int]] = {}
    for inc in incs:
        by_source.setdefault(inc.source_id, []).append(inc.slot)
    for source, slots in sorted(by_source.items()):
        ranges = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in to_ranges(slots))
        log.info("slots %s (%d) %s server %d", ranges, len(slots), what, source)
