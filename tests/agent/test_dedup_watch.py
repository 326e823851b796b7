"""Watching slots of a big dedup window gives the event loop back while it indexes (issue #14:
one pass over the window blocked a source at its CPU quota, and every client with it)."""

from __future__ import annotations

import asyncio

from netmigrate.agent.dedup import DedupWindow

ADDR = ("127.0.0.1", 9)


def rid(client: int, counter: int) -> int:
    return client << 32 | counter


def _window(n: int) -> DedupWindow:
    w = DedupWindow(max_entries=10 * n, max_per_client=10 * n, max_bytes=1 << 30)
    for i in range(n):
        w.complete(w.begin(rid(1, i), i % 16, ADDR), b"r")
    return w


def test_gradual_watch_indexes_every_entry_of_its_slots() -> None:
    gradual = _window(1000)
    asyncio.run(gradual.watch_gradually([3, 5], chunk=64))
    for slot in (3, 5):
        ids = sorted(e.request_id for e in gradual.entries_of(slot))
        assert ids == [rid(1, i) for i in range(slot, 1000, 16)]


def test_gradual_watch_lets_the_loop_serve_between_chunks() -> None:
    w = _window(1000)
    served: list[int] = []

    async def main() -> None:
        watching = asyncio.create_task(w.watch_gradually([3], chunk=100))
        await asyncio.sleep(0)  # the watch takes its first step
        while not watching.done():
            served.append(len(w._watched))  # the slot is watched from the first step on
            await asyncio.sleep(0)

    asyncio.run(main())
    # Ten chunks: the loop ran other work between them, with the slot already watched.
    assert len(served) >= 9 and all(n == 1 for n in served)


def test_entries_begun_or_dropped_during_a_gradual_watch() -> None:
    w = _window(1000)

    async def main() -> None:
        watching = asyncio.create_task(w.watch_gradually([3], chunk=100))
        await asyncio.sleep(0)
        w.begin(rid(2, 1), 3, ADDR)  # a request of the watched slot arrives meanwhile
        w.forget(w.get(rid(1, 3 + 16 * 60)))  # one the scan has not reached yet is refused
        await watching

    asyncio.run(main())
    ids = {e.request_id for e in w.entries_of(3)}
    assert rid(2, 1) in ids
    assert rid(1, 3 + 16 * 60) not in ids
    assert rid(1, 3) in ids and rid(1, 3 + 16 * 61) in ids
    assert len(ids) == 1000 // 16 + 1  # 63 old ones, one forgotten, one new
