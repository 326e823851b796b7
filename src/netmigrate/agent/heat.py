"""Recent client requests per slot ("heat"), so a migration can move the hottest slots first.

The source host is saturated before a migration starts (DESIGN §10), so the copy's CPU comes
out of serving until the load leaves. Under a skewed load (zipfian YCSB) a few hundred slots
carry much of it; moving them first hands that load to the target within the first waves.

The data path only does ``counts[slot] += 1`` on a preallocated list (tens of ns against
µs per request); recency comes from halving every count once per ``HEAT_HALF_LIFE`` seconds,
off the data path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from netmigrate.protocol.constants import SLOT_COUNT

#: Seconds after which a past request weighs half: long enough that a few seconds of load
#: before a migration rank its slots, short enough that yesterday's hot spot does not.
HEAT_HALF_LIFE = 10.0


class SlotHeat:
    def __init__(self) -> None:
        #: Requests per slot, decayed; the data path increments it in place (never rebound,
        #: so the data path may hold the list itself).
        self.counts: list[int] = [0] * SLOT_COUNT

    def decay(self) -> None:
        counts = self.counts
        counts[:] = [n >> 1 for n in counts]

    def hottest_first(self, slots: Iterable[int]) -> list[int]:
        """``slots`` by heat, hottest first; equal heat in ascending slot order (so without
        traffic the order is the ascending one)."""
        counts = self.counts
        return sorted(slots, key=lambda s: (-counts[s], s))

    async def run(self, half_life: float = HEAT_HALF_LIFE) -> None:
        """Decay for ever (a task of the agent)."""
        while True:
            await asyncio.sleep(half_life)
            self.decay()
