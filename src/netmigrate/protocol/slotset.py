"""Slot sets: the one parser, formatter and range arithmetic of sets of slots.

A slot spec is ``none``, ``all``, or comma-separated slots and inclusive ranges
(``0-4095,8000``), as ``--slots`` and the collection's ``slots`` take it. Ranges are inclusive
``(first, last)`` pairs, ascending and disjoint, as the control protocol's ``SlotRange``, Redis'
``CLUSTER ADDSLOTSRANGE`` and the ``slot_map`` module's results carry them. Agents, the
controller, the Redis node setup, the collection and the benchmarks all go through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from netmigrate.protocol.constants import SLOT_COUNT

#: Inclusive ``(first, last)``.
SlotRange = tuple[int, int]

_V = TypeVar("_V")

MAX_SLOT = SLOT_COUNT - 1


class SlotSetError(ValueError):
    """A malformed slot spec or a slot outside 0..16383."""


def parse(text: str) -> frozenset[int]:
    """The slots of a spec: ``none``, ``all``, or ``0-99,200,300-400`` (spaces allowed)."""
    text = text.strip().lower()
    if text == "none":
        return frozenset()
    if text == "all":
        return frozenset(range(SLOT_COUNT))
    slots: set[int] = set()
    for part in text.split(","):
        lo_text, dash, hi_text = part.strip().partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if dash else lo
        except ValueError:
            raise SlotSetError(f"{part!r} is not a slot or a range LO-HI") from None
        if not 0 <= lo <= hi <= MAX_SLOT:
            raise SlotSetError(f"{part!r} is not within 0-{MAX_SLOT} (LO <= HI)")
        slots.update(range(lo, hi + 1))
    return frozenset(slots)


def check_range(first: int, last: int) -> range:
    """The slots ``first..last``; SlotSetError unless ``0 <= first <= last <= 16383``."""
    if not 0 <= first <= last <= MAX_SLOT:
        raise SlotSetError(f"slot range {first}-{last} is not within 0-{MAX_SLOT}")
    return range(first, last + 1)


def to_ranges(slots: Iterable[int]) -> list[SlotRange]:
    """Inclusive ranges of a set of slots, ascending (duplicates and order do not matter)."""
    out: list[SlotRange] = []
    for slot in sorted(set(slots)):
        if out and out[-1][1] == slot - 1:
            out[-1] = (out[-1][0], slot)
        else:
            out.append((slot, slot))
    return out


def ranges_where(predicate: Callable[[int], object]) -> list[SlotRange]:
    """Inclusive ranges of the slots in 0..16383 for which ``predicate(slot)`` is true."""
    out: list[SlotRange] = []
    start = None
    for slot in range(SLOT_COUNT + 1):
        hit = slot < SLOT_COUNT and predicate(slot)
        if hit and start is None:
            start = slot
        elif not hit and start is not None:
            out.append((start, slot - 1))
            start = None
    return out


def from_ranges(ranges: Iterable[SlotRange]) -> set[int]:
    """The slots of inclusive ranges."""
    return {slot for first, last in ranges for slot in range(first, last + 1)}


def missing(slots: Iterable[int]) -> list[SlotRange]:
    """Inclusive ranges of the slots in 0..16383 that are not in ``slots``."""
    present = set(slots)
    return ranges_where(lambda slot: slot not in present)


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    """``0-99,200`` (the spec syntax, which :func:`parse` reads back); ``none`` when empty."""
    text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
    return text or "none"


def format_slots(slots: Iterable[int]) -> str:
    """A set of slots as the shortest spec: ``0-99,200``, or ``none``."""
    return format_ranges(to_ranges(slots))


def runs(values: Mapping[int, _V]) -> list[tuple[int, int, _V]]:
    """``(first, last, value)`` for each run of consecutive slots with equal values."""
    out: list[tuple[int, int, _V]] = []
    for slot in sorted(values):
        value = values[slot]
        if out and out[-1][1] == slot - 1 and out[-1][2] == value:
            out[-1] = (out[-1][0], slot, value)
        else:
            out.append((slot, slot, value))
    return out


def diff(before: Mapping[int, _V], after: Mapping[int, _V]) -> list[tuple[int, int, _V, _V]]:
    """``(first, last, old, new)`` for each run of consecutive slots of ``after`` whose value
    differs from ``before`` the same way (every slot of ``after`` must be in ``before``)."""
    changed = {s: (before[s], v) for s, v in after.items() if before[s] != v}
    return [(first, last, old, new) for first, last, (old, new) in runs(changed)]
