"""Cyclic-GC policy of the long-running, allocation-heavy processes (agents, load generators).

CPython's full (generation 2) collection walks every tracked object. A process that keeps a
large, growing set of objects alive (the agent's dedup window, a load generator's history of
every operation) pays for that walk over and over, as pauses that grow with the heap: in the
lab migration bench the load generator stopped every few seconds, for up to a second near the
end of a run, and the clients' throughput fell to zero with it. Objects that will live until
the process ends are moved out of the collector's sight with :func:`gc.freeze` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

#: Thresholds for processes that allocate a few objects per request (defaults: 700, 10, 10).
THRESHOLDS = (20_000, 20, 20)


def freeze_survivors() -> None:
    """Collect the young generations, then freeze whatever survived (it is long-lived)."""
    gc.collect(1)
    gc.freeze()


def settle() -> None:
    """At the end of start-up: collect everything once, freeze it, collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


async def freeze_periodically(stop: asyncio.Event, interval: float = 1.0) -> None:
    """Freeze survivors every ``interval`` seconds until ``stop`` is set, for a process whose
    live set keeps growing (young garbage is still collected, by the collection before each
    freeze and by the automatic young-generation collections in between)."""
    gc.set_threshold(*THRESHOLDS)
    while not stop.is_set():
        freeze_survivors()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
