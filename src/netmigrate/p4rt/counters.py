"""Read indirect counters by P4Info name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from finsy.proto import p4r

from netmigrate.p4rt.errors import P4RuntimeError
from netmigrate.p4rt.session import P4RTSession


@dataclass(frozen=True, slots=True)
class CounterValue:
    packets: int
    bytes: int


async def read_counters(
    session: P4RTSession, counter: str, indices: Iterable[int] | None = None
) -> dict[int, CounterValue]:
    """``{index: CounterValue}`` of counter ``counter``: every cell, or just ``indices``."""
    try:
        counter_id = session.schema.counters[counter].id
    except (KeyError, ValueError):  # finsy raises ValueError for unknown names
        raise P4RuntimeError(f"no counter {counter!r} in the P4Info", code="NOT_FOUND") from None
    if indices is None:
        requests = [p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=counter_id))]
    else:
        requests = [
            p4r.Entity(
                counter_entry=p4r.CounterEntry(counter_id=counter_id, index=p4r.Index(index=i))
            )
            for i in indices
        ]
    out: dict[int, CounterValue] = {}
    for e in await session.read(requests):
        ce = e.counter_entry
        out[ce.index.index] = CounterValue(ce.data.packet_count, ce.data.byte_count)
    return out
