"""The history checker must find each kind of violation, and nothing in legal histories."""

from __future__ import annotations

import pytest

from netmigrate.bench.history import (
    MIN_VALUE_SIZE,
    History,
    Op,
    ValueFactory,
    unique_value,
    value_token,
)

K = b"k"


def v(seq: int) -> bytes:
    return unique_value(1, seq, size=16)


def hist(*ops: Op, final: bytes | str | None = "unset", initial: bytes | None = None) -> History:
    h = History()
    h.extend(ops)
    if initial is not None:
        h.initial[K] = initial
    if final != "unset":
        h.final[K] = final  # type: ignore[assignment]
    return h


def test_sequential_history_is_clean():
    h = hist(
        Op("set", K, v(1), 0, 1),
        Op("get", K, v(1), 2, 3),
        Op("set", K, v(2), 4, 5),
        Op("get", K, v(2), 6, 7),
        Op("del", K, None, 8, 9),
        Op("get", K, None, 10, 11),
        final=None,
    )
    r = h.check()
    assert r.ok, r.summary()
    assert r.operations == 6 and r.keys == 1


def test_read_of_overwritten_value_is_stale():
    h = hist(
        Op("set", K, v(1), 0, 1),
        Op("set", K, v(2), 2, 3),
        Op("get", K, v(1), 4, 5),  # v2 was acknowledged before this read began
    )
    r = h.check()
    assert r.stale_reads == 1 and not r.ok


def test_concurrent_write_may_or_may_not_be_seen():
    h = hist(
        Op("set", K, v(1), 0, 1),
        Op("set", K, v(2), 2, 10),  # overlaps both reads
        Op("get", K, v(1), 3, 4),
        Op("get", K, v(2), 5, 6),
    )
    assert h.check().ok


def test_unacknowledged_write_explains_a_later_read():
    h = hist(
        Op("set", K, v(1), 0, 1),
        Op("set", K, v(2), 2, None),  # timed out: may have been applied
        Op("get", K, v(2), 20, 21),
        final=v(2),
    )
    assert h.check().ok


def test_not_found_after_acknowledged_set_is_stale():
    h = hist(Op("set", K, v(1), 0, 1), Op("get", K, None, 2, 3))
    assert h.check().stale_reads == 1


def test_value_never_written_is_reported():
    h = hist(Op("set", K, v(1), 0, 1), Op("get", K, b"garbage", 2, 3))
    r = h.check()
    assert r.unknown_values == 1 and not r.ok


def test_final_state_hiding_an_acknowledged_write_is_a_lost_write():
    # The classic migration bug: the copy of an old value overwrites a newer client write.
    h = hist(
        Op("set", K, v(1), 0, 1),
        Op("set", K, v(2), 2, 3),
        final=v(1),
    )
    r = h.check()
    assert r.lost_writes == 1
    assert b"w1:2" in r.violations[0].detail.encode()


def test_final_state_from_the_last_write_is_fine():
    h = hist(Op("set", K, v(1), 0, 1), Op("set", K, v(2), 2, 3), final=v(2))
    assert h.check().ok


def test_deleted_key_resurrected_by_a_copy_is_lost():
    h = hist(Op("set", K, v(1), 0, 1), Op("del", K, None, 2, 3), final=v(1))
    assert h.check().lost_writes == 1


def test_initial_value_then_overwritten():
    ok = hist(
        Op("get", K, b"init|pad", 0, 1), Op("set", K, v(1), 2, 3), final=v(1), initial=b"init|pad"
    )
    assert ok.check().ok
    stale = hist(Op("set", K, v(1), 0, 1), Op("get", K, b"init|pad", 2, 3), initial=b"init|pad")
    assert stale.check().stale_reads == 1


def counter_hist(results: list[int | None], final: int) -> History:
    h = History()
    for i, res in enumerate(results):
        h.extend([Op("incr", b"c", None, i * 2, None if res is None else i * 2 + 1, res)])
    h.final_counters[b"c"] = final
    return h


def test_counter_applied_once_each():
    assert counter_hist([1, 2, 3], 3).check().ok


def test_counter_retry_applied_twice_is_a_duplicate():
    r = counter_hist([1, 2, 4], 4).check()  # one increment hit twice (3 never returned)
    assert r.duplicates == 1


def test_counter_same_result_twice_is_a_duplicate():
    assert counter_hist([1, 1], 2).check().duplicates == 1


def test_counter_unknown_outcome_may_or_may_not_count():
    assert counter_hist([1, None, 2], 2).check().ok
    assert counter_hist([1, None, 3], 3).check().ok
    assert counter_hist([1, None], 3).check().duplicates == 1


def test_counter_lost_increment():
    assert counter_hist([1, 2, 3], 2).check().lost_increments == 1


def test_recording_api_uses_monotonic_times():
    h = History()
    w = h.invoke("set", K, v(1))
    h.complete(w)
    r = h.invoke("get", K)
    h.complete(r, value=v(1))
    assert w.inv <= w.comp <= r.inv <= r.comp
    h.final[K] = v(1)
    assert h.check().ok


# --- What the YCSB harness needs of the same checker ---------------------------------------


def test_value_factory_makes_unique_incompressible_values_of_the_exact_size() -> None:
    vf = ValueFactory(64, seed=1)
    a, b = vf.make(1, 7), vf.make(1, 8)
    assert len(a) == len(b) == 64
    assert value_token(a) == b"w1:7" and value_token(b) == b"w1:8"
    assert len(set(a[len(b"w1:7|") :])) > 10  # seeded filler, not one repeated byte
    with pytest.raises(ValueError, match="at least"):
        ValueFactory(MIN_VALUE_SIZE - 1, seed=1)


def test_value_of_another_key_is_reported() -> None:
    """A misrouted read (another key's value) names a write this key never saw."""
    h = History()
    h.initial[b"a"], h.initial[b"b"] = unique_value(0, 1), unique_value(0, 2)
    h.extend([Op("get", b"a", unique_value(0, 2), 0, 1)])
    r = h.check()
    assert r.unknown_values == 1 and r.violations[0].key == b"a"


def test_loaded_key_that_vanishes_is_reported() -> None:
    h = hist(Op("get", K, None, 0, 1), final=None, initial=v(0))
    r = h.check()
    assert r.stale_reads == 1 and r.lost_writes == 1


def test_insert_may_be_absent_until_acknowledged() -> None:
    h = hist(
        Op("set", K, v(1), 0, 3),
        Op("get", K, None, 1, 2),  # during the insert: either
        Op("get", K, None, 4, 5),  # after its acknowledgement: stale
        final=v(1),
    )
    r = h.check()
    assert r.stale_reads == 1 and r.lost_writes == 0


def test_recording_keeps_only_the_token() -> None:
    h = History()
    big = unique_value(3, 4, size=4096)
    h.complete(h.invoke("set", K, big))
    h.complete(h.invoke("get", K), big)
    assert [op.value for op in h.ops] == [b"w3:4", b"w3:4"]
    h.final[K] = big
    assert h.check().ok


def test_untouched_keys_are_judged_like_touched_ones() -> None:
    """The fast path for keys no operation touched agrees with the full check."""
    cases = [
        (v(0), v(0), True),  # unchanged
        (None, None, True),  # never existed
        (v(0), None, False),  # lost
        (None, v(5), False),  # appeared from nowhere
        (v(0), v(5), False),  # changed by nobody
    ]
    for initial, final, ok in cases:
        h = History()
        if initial is not None:
            h.initial[K] = initial
        h.final[K] = final
        fast = h.check()
        # The same key with one read of its initial state takes the full path.
        h.extend([Op("get", K, initial, 0, 1)])
        full = h.check()
        assert fast.ok is full.ok is ok, (initial, final)
        assert fast.keys == full.keys == 1
