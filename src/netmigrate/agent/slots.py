"""Which slots this agent serves, and how: the one place the request path asks.

Every data request passes :meth:`SlotTable.admit` before it reaches Redis. Today a slot is
either OWNED (served) or NOT_OWNED (answered WRONG_OWNER); live migration adds MIGRATING_OUT /
MIGRATING_IN with their bookkeeping here, behind the same question, so the request path does
not change shape.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from netmigrate.protocol.constants import SLOT_COUNT

_BITMAP_LEN = SLOT_COUNT // 8


class SlotState(enum.IntEnum):
    NOT_OWNED = 0
    OWNED = 1


class Admission(enum.IntEnum):
    """What the request path does with a request for a slot."""

    SERVE = 0
    WRONG_OWNER = 1


_SERVE = Admission.SERVE
_WRONG_OWNER = Admission.WRONG_OWNER
_OWNED = int(SlotState.OWNED)


class SlotTable:
    __slots__ = ("_state",)

    def __init__(self, owned: Iterable[int] = ()) -> None:
        self._state = bytearray(SLOT_COUNT)
        self.set_state(owned, SlotState.OWNED)

    def admit(self, slot: int, op: int, flags: int) -> Admission:
        """May a request with ``op`` and ``flags`` for ``slot`` be served here, and how."""
        return _SERVE if self._state[slot] == _OWNED else _WRONG_OWNER

    def state(self, slot: int) -> SlotState:
        return SlotState(self._state[slot])

    def set_state(self, slots: Iterable[int], state: SlotState) -> None:
        for slot in slots:
            if not 0 <= slot < SLOT_COUNT:
                raise ValueError(f"slot {slot} out of range 0..{SLOT_COUNT - 1}")
            self._state[slot] = state

    def slots_in(self, state: SlotState) -> list[int]:
        return [s for s in range(SLOT_COUNT) if self._state[s] == state]

    def count(self, state: SlotState) -> int:
        return self._state.count(int(state))

    def ranges(self, state: SlotState) -> list[tuple[int, int]]:
        """Inclusive ranges of the slots in ``state``, ascending."""
        out: list[tuple[int, int]] = []
        start = None
        for slot in range(SLOT_COUNT + 1):
            hit = slot < SLOT_COUNT and self._state[slot] == state
            if hit and start is None:
                start = slot
            elif not hit and start is not None:
                out.append((start, slot - 1))
                start = None
        return out

    def owned_bitmap(self) -> bytes:
        """Owned slots as a 2048-byte bitmap, slot s = bit s (Redis SETBIT/GETBIT order)."""
        bits = bytearray(_BITMAP_LEN)
        for slot in range(SLOT_COUNT):
            if self._state[slot] == _OWNED:
                bits[slot >> 3] |= 0x80 >> (slot & 7)
        return bytes(bits)

    @classmethod
    def from_owned_bitmap(cls, bitmap: bytes) -> SlotTable:
        if len(bitmap) != _BITMAP_LEN:
            raise ValueError(f"slot bitmap of {len(bitmap)} bytes, expected {_BITMAP_LEN}")
        return cls(s for s in range(SLOT_COUNT) if bitmap[s >> 3] & (0x80 >> (s & 7)))


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    """``0-99,200`` (the --slots syntax); ``none`` when empty."""
    if not ranges:
        return "none"
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
