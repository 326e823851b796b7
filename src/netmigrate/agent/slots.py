"""Which slots this agent serves, and how: the one place the request path asks.

Every data request passes :meth:`SlotTable.admit` before it reaches Redis. A slot is in one of
these states (docs/migration.md, "Agent slot states"):

- NOT_OWNED: answered WRONG_OWNER;
- OWNED: served;
- MIGRATING_OUT: this agent is the source and sent SLOT_START, the target's acknowledgement has
  not been processed yet: still served like OWNED (the switch sends no new request here once it
  flipped the slot, so what arrives was routed before the flip);
- FROZEN: the source after the acknowledgement: only double reads are served (from the frozen
  copy), everything else is answered WRONG_OWNER;
- MOVED: the target owns the slot; the keys are still here until finalize, so a late double
  read is still answered; everything else WRONG_OWNER;
- MIGRATING_IN: this agent is the target: requests go to the target bookkeeping
  (:class:`~netmigrate.agent.target.TargetSide`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from netmigrate.protocol import slotset
from netmigrate.protocol.constants import READ_OPS, SLOT_COUNT, Flag

_BITMAP_LEN = SLOT_COUNT // 8


class SlotState(enum.IntEnum):
    NOT_OWNED = 0
    OWNED = 1
    MIGRATING_OUT = 2
    FROZEN = 3
    MOVED = 4
    MIGRATING_IN = 5


#: States in which this agent is the slot's owner (the persisted ownership bit is set).
OWNER_STATES = frozenset({SlotState.OWNED, SlotState.MIGRATING_OUT, SlotState.FROZEN})


class Admission(enum.IntEnum):
    """What the request path does with a request for a slot."""

    SERVE = 0
    WRONG_OWNER = 1
    #: The slot migrates in: the target bookkeeping decides.
    TARGET = 2


_SERVE = Admission.SERVE
_WRONG_OWNER = Admission.WRONG_OWNER
_TARGET = Admission.TARGET
_DOUBLE_READ = int(Flag.DOUBLE_READ)

# admit() is on the hot path: one tuple lookup by state, plus the flag test for the two states
# that serve double reads only.
_BY_STATE = (_WRONG_OWNER, _SERVE, _SERVE, None, None, _TARGET)
_IS_READ = bytes(1 if op in READ_OPS else 0 for op in range(256))
_OWNER_BYTES = bytes(1 if SlotState(s) in OWNER_STATES else 0 for s in range(len(SlotState)))
#: bytes.translate table: state byte -> ASCII "1" (owner) or "0".
_OWNER_DIGITS = bytes(
    0x31 if s < len(SlotState) and SlotState(s) in OWNER_STATES else 0x30 for s in range(256)
)


class SlotTable:
    __slots__ = ("_state",)

    def __init__(self, owned: Iterable[int] = ()) -> None:
        self._state = bytearray(SLOT_COUNT)
        self.set_state(owned, SlotState.OWNED)

    def admit(self, slot: int, op: int, flags: int) -> Admission:
        """May a request with ``op`` and ``flags`` for ``slot`` be served here, and how.

        DOUBLE_READ is the switch's word (it clears the flag on every request before setting
        it, docs/pipeline.md) and it only sets it on reads; a write carrying it anyway (no
        switch in between) is still refused by a frozen slot.
        """
        answer = _BY_STATE[self._state[slot]]
        if answer is not None:
            return answer
        return _SERVE if flags & _DOUBLE_READ and _IS_READ[op] else _WRONG_OWNER

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
        return slotset.ranges_where(lambda s: self._state[s] == state)

    def owner_ranges(self) -> list[tuple[int, int]]:
        """Inclusive ranges of the slots this agent owns (:data:`OWNER_STATES`)."""
        return slotset.ranges_where(lambda s: _OWNER_BYTES[self._state[s]])

    def owner_count(self) -> int:
        return sum(self.count(s) for s in OWNER_STATES)

    def is_owner(self, slot: int) -> bool:
        return bool(_OWNER_BYTES[self._state[slot]])

    def owned_bitmap(self, overrides: dict[int, bool] | None = None) -> bytes:
        """Owned slots (:data:`OWNER_STATES`) as a 2048-byte bitmap, slot s = bit s (Redis
        SETBIT/GETBIT order). ``overrides`` sets the bit of some slots regardless of their
        state (to persist a state before entering it)."""
        # One state byte per slot -> b"0"/b"1" per slot (C speed) -> a 16384-bit integer, most
        # significant bit first: exactly Redis' bit order. ~50 us instead of a Python loop's ms.
        digits = bytearray(self._state.translate(_OWNER_DIGITS))
        for slot, owned in (overrides or {}).items():
            digits[slot] = 0x31 if owned else 0x30
        return int(digits, 2).to_bytes(_BITMAP_LEN, "big")

    @classmethod
    def from_owned_bitmap(cls, bitmap: bytes) -> SlotTable:
        if len(bitmap) != _BITMAP_LEN:
            raise ValueError(f"slot bitmap of {len(bitmap)} bytes, expected {_BITMAP_LEN}")
        return cls(s for s in range(SLOT_COUNT) if bitmap[s >> 3] & (0x80 >> (s & 7)))
