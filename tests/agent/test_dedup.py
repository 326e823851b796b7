"""DedupWindow: at-most-once bookkeeping in bounded memory."""

from __future__ import annotations

from netmigrate.agent.dedup import DedupWindow

ADDR = ("127.0.0.1", 9)


def rid(client: int, counter: int) -> int:
    return client << 32 | counter


def test_in_flight_then_cached() -> None:
    w = DedupWindow(max_entries=10, max_per_client=10, max_bytes=1000)
    e = w.begin(rid(1, 1), slot=5, addr=ADDR)
    assert w.get(rid(1, 1)) is e and e.reply is None and e.waiters == [ADDR]
    w.complete(e, b"reply")
    assert w.get(rid(1, 1)).reply == b"reply"
    assert w.bytes == 5
    assert list(w.request_ids(5)) == [rid(1, 1)]
    assert list(w.request_ids(6)) == []


def test_forget_lets_a_retry_run_again() -> None:
    w = DedupWindow(max_entries=10, max_per_client=10, max_bytes=1000)
    e = w.begin(rid(1, 1), 0, ADDR)
    w.forget(e)
    assert w.get(rid(1, 1)) is None
    again = w.begin(rid(1, 1), 0, ADDR)
    # The stale queue entry of the forgotten attempt must not evict the new one later.
    for i in range(2, 10):
        w.begin(rid(1, i), 0, ADDR)
    assert w.get(rid(1, 1)) is again


def test_per_client_bound_keeps_other_clients() -> None:
    w = DedupWindow(max_entries=100, max_per_client=3, max_bytes=10_000)
    w.begin(rid(2, 1), 0, ADDR)
    for i in range(1, 7):
        w.begin(rid(1, i), 0, ADDR)
    assert [w.get(rid(1, i)) is not None for i in range(1, 7)] == [False] * 3 + [True] * 3
    assert w.get(rid(2, 1)) is not None
    assert w.evictions == 3


def test_total_bound_evicts_least_recent_client_first() -> None:
    w = DedupWindow(max_entries=4, max_per_client=4, max_bytes=10_000)
    w.begin(rid(1, 1), 0, ADDR)
    w.begin(rid(1, 2), 0, ADDR)
    w.begin(rid(2, 1), 0, ADDR)
    w.begin(rid(2, 2), 0, ADDR)
    w.begin(rid(3, 1), 0, ADDR)  # over the total: client 1 (least recent) loses its oldest
    assert w.get(rid(1, 1)) is None
    assert all(w.get(r) is not None for r in (rid(1, 2), rid(2, 1), rid(2, 2), rid(3, 1)))
    assert len(w) == 4


def test_byte_bound() -> None:
    w = DedupWindow(max_entries=100, max_per_client=100, max_bytes=25)
    for i in range(1, 5):
        w.complete(w.begin(rid(1, i), 0, ADDR), b"x" * 10)
    assert w.bytes <= 25
    assert w.get(rid(1, 4)) is not None and w.get(rid(1, 1)) is None
