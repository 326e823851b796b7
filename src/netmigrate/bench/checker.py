"""Self-describing values and a checker that finds lost writes and stale or foreign reads.

Every value the harness writes starts with ``<keynum>:<write id>:`` and is padded to the
value size with seeded filler, so any value read back names the write that produced it.
Write ids come from one logical clock that also stamps acknowledgements, which gives the
real-time order the checker needs:

* a read (during the run or in the final sweep) that returns write ``w`` is **stale** if some
  write ``w'`` of the same key was acknowledged before the read started although ``w'`` began
  after ``w`` was acknowledged: the store lost ``w'`` or served an old copy;
* a value whose key number is not the key read is **foreign** (misrouted or corrupted);
* a value whose write id was never issued is **corrupt**;
* a missing value for a key whose insert was acknowledged is **missing**.

Writes that failed or never returned have an unknown outcome and are never held against the
store. State is one integer per key and 16 bytes per clock tick (two per write), kept for the
whole run so a read that started before a newer write was acknowledged is still judged
against the snapshot it started with.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field

#: Shortest value that still fits the header of a large run (``keynum:write id:``).
MIN_VALUE_SIZE = 24


class ValueFactory:
    """Builds values of exactly ``size`` bytes (longer only if ``size`` < the header)."""

    def __init__(self, size: int, seed: int) -> None:
        if size < MIN_VALUE_SIZE:
            raise ValueError(f"value size must be at least {MIN_VALUE_SIZE} bytes, got {size}")
        self.size = size
        rng = random.Random(seed ^ 0x5EED)
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        self._filler = bytes(rng.choice(alphabet) for _ in range(size))

    def make(self, keynum: int, write_id: int) -> bytes:
        head = b"%d:%d:" % (keynum, write_id)
        return head + self._filler[: self.size - len(head)]


def parse_value(value: bytes) -> tuple[int, int] | None:
    """``(keynum, write id)`` of a harness value, ``None`` if it is not one."""
    parts = value.split(b":", 2)
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


@dataclass(slots=True)
class CheckCounts:
    checked: int = 0
    stale: int = 0
    foreign: int = 0
    corrupt: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return self.stale + self.foreign + self.corrupt + self.missing

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "stale": self.stale,
            "foreign": self.foreign,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "violations": self.violations,
            "examples": list(self.examples),
        }


class WriteChecker:
    """Tracks every write of a run and judges the values read back (see module docstring)."""

    #: Acknowledgement clock of a write whose outcome is unknown (failed or in flight).
    UNKNOWN = -1
    #: Marks a clock tick that is an acknowledgement, not a write id.
    _ACK_TICK = 0

    def __init__(self, records: int) -> None:
        # Load-phase write of key k has id k; all are acknowledged at tick ``records``.
        self._records = records
        self._clock = records
        self._base = records + 1  # first run-phase tick
        # latest[k]: id (= begin tick) of the newest acknowledged write of key k.
        self._latest = array("q", range(records))
        # Per tick since _base: the write's ack tick (or UNKNOWN / _ACK_TICK) and its key.
        self._ack = array("q")
        self._key = array("q")
        self.reads = CheckCounts()

    # -- writes -------------------------------------------------------------------------
    def begin_write(self, keynum: int) -> int:
        """A new write id (= its begin tick on the logical clock)."""
        self._clock += 1
        self._ack.append(self.UNKNOWN)
        self._key.append(keynum)
        if keynum >= len(self._latest):
            self._latest.extend([0] * (keynum + 1 - len(self._latest)))
        return self._clock

    def end_write(self, wid: int, ok: bool) -> None:
        """Record the acknowledgement of write ``wid`` (``ok=False``: outcome unknown)."""
        self._clock += 1
        self._ack.append(self._ACK_TICK)
        self._key.append(-1)
        if not ok:
            return
        self._ack[wid - self._base] = self._clock
        keynum = self._key[wid - self._base]
        if wid > self._latest[keynum]:
            self._latest[keynum] = wid

    # -- reads --------------------------------------------------------------------------
    def begin_read(self, keynum: int) -> int:
        """Snapshot taken when a read starts; pass it to :meth:`check_read`."""
        return self._latest[keynum] if keynum < len(self._latest) else 0

    def check_read(
        self, keynum: int, value: bytes | None, snapshot: int, counts: CheckCounts | None = None
    ) -> bool:
        """Judge one value read for ``keynum``; True if it is allowed."""
        c = self.reads if counts is None else counts
        c.checked += 1
        if value is None:
            # The key existed when the read began if it was loaded or an insert of it had
            # been acknowledged by then (snapshot > 0: run-phase write ids start above 0).
            if keynum < self._records or snapshot > 0:
                c.missing += 1
                c.note(f"key {keynum}: missing")
                return False
            return True
        parsed = parse_value(value)
        if parsed is None:
            c.corrupt += 1
            c.note(f"key {keynum}: unparsable value {value[:40]!r}")
            return False
        vkey, wid = parsed
        if vkey != keynum:
            c.foreign += 1
            c.note(f"key {keynum}: value of key {vkey} (write {wid})")
            return False
        if wid == keynum and wid < self._records:
            ack = self._records  # the load-phase write of this key
        elif self._base <= wid <= self._clock and self._key[wid - self._base] == keynum:
            ack = self._ack[wid - self._base]
        else:
            c.corrupt += 1
            c.note(f"key {keynum}: write {wid} was never issued for this key")
            return False
        if ack != self.UNKNOWN and ack < snapshot:
            c.stale += 1
            c.note(f"key {keynum}: stale write {wid}, newer acked write {snapshot}")
            return False
        return True

    # -- final sweep ----------------------------------------------------------------------
    def known_keys(self) -> int:
        """Key numbers 0..n-1 that were loaded or written (some inserts may have failed)."""
        return len(self._latest)

    def check_final(self, keynums: list[int], values: list[bytes | None]) -> CheckCounts:
        """Judge the values of a sweep taken after every write has returned."""
        counts = CheckCounts()
        for keynum, value in zip(keynums, values, strict=True):
            self.check_read(keynum, value, self.begin_read(keynum), counts)
        return counts

    @property
    def writes(self) -> int:
        return len(self._ack) // 2
