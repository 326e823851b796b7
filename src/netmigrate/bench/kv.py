"""The small client interface every benchmarked system implements.

The runner only ever calls these methods, so one workload runs unchanged against Redis
Cluster (redis-py's cluster client), stop-and-copy (two standalone servers behind a slot
router) and NetMigrate (its own UDP client). Read-modify-write (workload F) is a ``get``
followed by a ``set`` of the same key, issued by the runner.

Redirections and other events a client handles internally (MOVED, ASK, TRYAGAIN, a write held
while a slot is frozen) are reported through :class:`ClientEvents`, so they show up per phase
and on the timeline even though the operation itself succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from netmigrate.protocol.constants import Status

#: Event kinds the peers report (the report keeps any other kind a system invents, too).
MOVED = "MOVED"
ASK = "ASK"
TRYAGAIN = "TRYAGAIN"
#: Stop-and-copy: a write that waited because its slot was frozen for the copy.
WRITE_HELD = "WRITE_HELD"
#: NetMigrate: a request answered WRONG_OWNER (its slot moved on) and sent again.
WRONG_OWNER = Status.WRONG_OWNER.name
#: Redirection kinds (the table's "redirections" column sums these).
REDIRECT_KINDS = frozenset({MOVED, ASK, TRYAGAIN, WRONG_OWNER})


class ClientEvents(Protocol):
    def event(self, kind: str, n: int = 1) -> None:
        """Count ``n`` events of ``kind`` now."""


class NullEvents:
    """Discards events (verification sweeps, overhead probes)."""

    def event(self, kind: str, n: int = 1) -> None:
        return None


class CountingEvents:
    """Totals per kind, for tests and one-off tools."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def event(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


@runtime_checkable
class KVClient(Protocol):
    async def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, ``None`` if absent."""

    async def set(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``; return only once the store acknowledged it."""

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Bulk store for the load phase (pipelined where the system can)."""

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Bulk read for the verification sweep, in the order of ``keys``."""

    async def aclose(self) -> None:
        """Release connections."""


def error_kind(exc: BaseException) -> str:
    """A short, stable label for a failed operation (the report counts errors per label).

    Redis errors are labelled by their error code (``TRYAGAIN``, ``CLUSTERDOWN``, ``MOVED``
    ...), everything else by exception class, so a count never depends on a message text
    that carries addresses or key names.
    """
    # Import here: only systems built on redis-py produce these, and the runner is generic.
    from redis.exceptions import ResponseError

    if isinstance(exc, ResponseError) and type(exc) is ResponseError:
        head = str(exc).split(" ", 1)[0]
        if head.isupper() and head.isalpha():
            return head
    if isinstance(exc, TimeoutError):
        return "Timeout"
    return type(exc).__name__
