"""The cyclic-GC policy of long-running processes (netmigrate.gc_policy)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from netmigrate import gc_policy


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector can free it


async def test_survivors_are_frozen_and_young_garbage_is_still_collected() -> None:
    saved = gc.get_threshold()
    try:
        gc.unfreeze()
        kept = [_Node() for _ in range(1000)]  # what a history keeps alive
        garbage = _Node()
        dead = weakref.ref(garbage)
        del garbage
        stop = asyncio.Event()
        task = asyncio.create_task(gc_policy.freeze_periodically(stop, interval=0.01))
        await asyncio.sleep(0.05)
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert gc.get_threshold() == gc_policy.THRESHOLDS
        # The cycle that was garbage was collected before the freeze, not frozen with it.
        assert dead() is None
        stop.set()
        await asyncio.wait_for(task, 1)
        assert kept[0].me is kept[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
