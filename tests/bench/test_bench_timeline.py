"""Recorder: time bins, phases, per-bin and per-phase percentiles, event and error counts."""

from __future__ import annotations

import random
from array import array

import pytest

from netmigrate.bench.timeline import (
    AFTER,
    BEFORE,
    DURING,
    Recorder,
    exact_percentiles,
    histogram_summary,
    new_histogram,
)
from netmigrate.bench.ycsb import READ, UPDATE

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000_000

    def __call__(self) -> int:
        return self.t


def test_ops_land_in_the_bin_of_their_completion() -> None:
    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    rec.record(READ, t0, t0 + 50 * MS)  # bin 0
    rec.record(READ, t0 + 60 * MS, t0 + 150 * MS)  # started in bin 0, completes in bin 1
    rec.record(UPDATE, t0 + 200 * MS, t0 + 201 * MS)  # bin 2
    rec.record(UPDATE, t0 + 250 * MS, t0 + 299 * MS)  # bin 2
    tl = rec.timeline(t0 + 300 * MS)
    assert tl["t_s"] == [0.0, 0.1, 0.2]
    assert tl["ops"] == [1, 1, 2]
    assert tl["ops_per_s"] == [10.0, 10.0, 20.0]
    assert tl["ops_by_type"] == {"read": [1, 1, 0], "update": [0, 0, 2]}
    assert tl["p50_us"][0] == 50_000 and tl["p50_us"][1] == 90_000


def test_partial_last_bin_is_dropped_and_empty_bins_have_no_latency() -> None:
    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    rec.record(READ, t0, t0 + 10 * MS)
    rec.record(READ, t0 + 300 * MS, t0 + 310 * MS)
    tl = rec.timeline(t0 + 350 * MS)  # bins 0..2 complete, bin 3 partial
    assert len(tl["t_s"]) == 3
    assert tl["ops"] == [1, 0, 0]
    assert tl["p99_us"][1] is None and tl["p99_us"][2] is None


def test_per_bin_percentiles_are_exact() -> None:
    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    for us in range(1, 1001):  # 1..1000 µs, all in bin 0
        rec.record(READ, t0, t0 + us * 1000)
    tl = rec.timeline(t0 + 100 * MS)
    assert tl["p50_us"] == [500]
    assert tl["p99_us"] == [990]
    assert tl["p999_us"] == [999]
    assert tl["max_us"] == [1000]


def test_phases_split_histograms_and_counts() -> None:
    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    for _ in range(10):
        rec.record(READ, clock.t, clock.t + MS)  # 1 ms before
    rec.error("ConnectionError", clock.t)
    clock.t = t0 + 1000 * MS
    rec.set_phase(DURING)
    for _ in range(5):
        rec.record(UPDATE, clock.t, clock.t + 20 * MS)
    rec.event("MOVED")
    rec.event("ASK", 3)
    clock.t = t0 + 1500 * MS
    rec.set_phase(AFTER)
    rec.record(READ, clock.t, clock.t + 2000)
    summary = rec.phase_summary(t0 + 2000 * MS)
    before, during, after = summary["before"], summary["during"], summary["after"]
    assert (before["ops"], during["ops"], after["ops"]) == (10, 5, 1)
    assert before["seconds"] == pytest.approx(1.0)
    assert during["seconds"] == pytest.approx(0.5)
    assert during["ops_per_s"] == pytest.approx(10.0)
    assert before["latency_us"]["all"]["p50"] == 1000
    assert during["latency_us"]["update"]["p99"] == pytest.approx(20_000, rel=1e-3)
    assert "update" not in before["latency_us"]
    assert before["errors"] == {"ConnectionError": 1}
    assert during["client_events"] == {"ASK": 3, "MOVED": 1}
    assert after["client_events"] == {}
    tl = rec.timeline(t0 + 2000 * MS)
    assert tl["phase"][0] == "before" and tl["phase"][12] == "during" and tl["phase"][-1] == "after"
    assert sum(tl["client_events"]["ASK"]) == 3
    assert sum(tl["errors"]["ConnectionError"]) == 1
    assert rec.histogram(BEFORE).get_total_count() == 10


def test_histogram_percentiles_agree_with_numpy() -> None:
    rng = random.Random(3)
    values = [max(1, int(rng.lognormvariate(7, 1))) for _ in range(50_000)]
    h = new_histogram()
    for v in values:
        h.record_value(v)
    s = histogram_summary(h)
    ordered = sorted(values)
    for got, pct in zip((s["p50"], s["p99"], s["p999"]), (50, 99, 99.9), strict=True):
        # HdrHistogram (3 significant digits) gives a value within 0.1% of the value at the
        # percentile's rank; it rounds the rank where nearest-rank takes the ceiling, so a
        # neighbouring rank is fine too.
        rank = round(pct / 100 * len(ordered))
        near = ordered[max(0, rank - 2) : rank + 2]
        assert any(got == pytest.approx(v, rel=1e-3) for v in near), (pct, got, near)
    assert s["count"] == 50_000 and s["max"] == pytest.approx(max(values), rel=1e-3)
    assert histogram_summary(new_histogram())["p99"] == 0


def test_exact_percentiles_of_raw_values() -> None:
    assert exact_percentiles(array("I", [5, 1, 3]), (50.0, 100.0)) == [3.0, 5.0]
    assert exact_percentiles(array("I"), (50.0,)) == [0.0]


def test_bad_bin_width() -> None:
    with pytest.raises(ValueError, match="positive"):
        Recorder(0)


def test_phase_is_before_initially() -> None:
    assert Recorder(100).phase == BEFORE


def _recorded(ops: list[tuple[int, int, int, int]], clock: FakeClock) -> Recorder:
    """A recorder with ``(phase, op, start_ms, end_ms)`` recorded in order; "during" begins
    at 200 ms."""
    rec = Recorder(100, clock=clock)
    for phase, op, start, end in ops:
        if phase != rec.phase:
            rec.set_phase(phase, rec.t0_ns + 200 * MS)
        rec.record(op, rec.t0_ns + start * MS, rec.t0_ns + end * MS)
    return rec


def test_merged_recorders_equal_one_recorder_of_all_operations() -> None:
    # What the load-generator processes rely on: merging their exports gives the same
    # timeline and phase summary as recording every operation in one place.
    ops_a = [(BEFORE, READ, 0, 5), (BEFORE, UPDATE, 10, 150), (DURING, READ, 210, 260)]
    ops_b = [(BEFORE, READ, 20, 30), (DURING, UPDATE, 220, 390), (DURING, READ, 300, 301)]
    clock = FakeClock()
    a, b = _recorded(ops_a, clock), _recorded(ops_b, clock)
    a.error("timeout", a.t0_ns + 120 * MS)
    b.error("timeout", b.t0_ns + 20 * MS)
    b.event("MOVED")
    merged = Recorder(100, clock=clock)
    merged.set_phase(DURING, merged.t0_ns + 200 * MS)
    merged.merge(a.export())
    merged.merge(b.export())
    whole = _recorded(sorted(ops_a + ops_b, key=lambda o: o[2]), clock)
    whole.error("timeout", whole.t0_ns + 120 * MS)
    whole.error("timeout", whole.t0_ns + 20 * MS)
    whole.event("MOVED")
    end = merged.t0_ns + 400 * MS
    assert merged.timeline(end) == whole.timeline(end)
    assert merged.phase_summary(end) == whole.phase_summary(end)
    assert (merged.ops_total, merged.errors_total, merged.events_total) == (6, 2, 1)


def test_merge_refuses_a_recorder_of_another_start() -> None:
    clock = FakeClock()
    a = Recorder(100, clock=clock)
    clock.t += 1
    with pytest.raises(ValueError, match="share"):
        a.merge(Recorder(100, clock=clock).export())


def test_a_stall_counts_only_where_every_process_stalled() -> None:
    from netmigrate.bench.timeline import stalls

    clock = FakeClock()
    # Process a completes at 100, 300, 390 ms; process b at 150, 260, 390 ms.
    a = _recorded(
        [(BEFORE, READ, 0, 100), (BEFORE, READ, 100, 300), (BEFORE, READ, 300, 390)], clock
    )
    b = _recorded(
        [(BEFORE, READ, 0, 150), (BEFORE, READ, 150, 260), (BEFORE, READ, 260, 390)], clock
    )
    merged = Recorder(100, clock=clock)
    merged.merge(a.export())
    merged.merge(b.export())
    t0 = merged.t0_ns
    assert [((g0 - t0) // MS, (g1 - t0) // MS) for g0, g1 in merged.gaps] == [
        (150, 260), (260, 300), (300, 390),
    ]  # fmt: skip
    tl = merged.timeline(t0 + 400 * MS)  # ops per bin: 0, 2, 1, 3
    tl["migration_start_s"], tl["migration_end_s"] = 0.2, 0.35
    st = stalls(tl, merged.gaps, t0)
    assert st["longest_gap_ms"] == 110.0 and st["longest_gap_at_s"] == 0.15
    assert st["longest_gap_during_ms"] == 110.0
    assert st["median_ops_per_bin_before"] == 2 and st["low_bins"] == 0
    tl["migration_start_s"] = 0.1  # bins before: [0]: median 0, nothing can fall under half
    assert stalls(tl, merged.gaps, t0)["low_bins"] == 0
    tl["ops"] = [4, 4, 1, 3]
    assert stalls(tl, merged.gaps, t0)["low_bins_at_s"] == [0.2]


def test_the_longest_gaps_are_listed_with_the_client_events_around_them() -> None:
    from netmigrate.bench.timeline import stalls

    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    for end in (10, 20, 60, 250, 260, 380):  # gaps: 10-20, 20-60, 60-250, 250-260, 260-380
        rec.record(READ, t0 + end * MS - MS, t0 + end * MS)
    clock.t = t0 + 150 * MS
    rec.event("TIMEOUT_RETRY")  # bin 1: inside the 60-250 ms gap
    clock.t = t0 + 390 * MS
    rec.event("BUSY")  # bin 3: after the 260-380 ms gap
    tl = rec.timeline(t0 + 400 * MS)
    tl["migration_start_s"], tl["migration_end_s"] = 0.2, None
    listed = stalls(tl, rec.gaps, t0)["longest_gaps"]
    assert [(g["at_s"], g["ms"]) for g in listed] == [
        (0.01, 10.0), (0.02, 40.0), (0.06, 190.0), (0.25, 10.0), (0.26, 120.0),
    ]  # fmt: skip
    assert listed[2]["events_around"] == {"TIMEOUT_RETRY": 1}
    assert listed[2]["phase"] == "before"
    assert listed[4]["events_around"] == {"BUSY": 1}  # bins 2..3 (380 ms ends in bin 3)
    assert listed[0]["events_around"] == {}


def test_only_the_ten_longest_gaps_are_listed() -> None:
    from netmigrate.bench.timeline import LONGEST_GAPS, stalls

    clock = FakeClock()
    rec = Recorder(100, clock=clock)
    t0 = rec.t0_ns
    t = 0
    for i in range(LONGEST_GAPS + 5):  # gaps of 6, 7, ... ms
        t += 6 + i
        rec.record(READ, t0 + t * MS - MS, t0 + t * MS)
    tl = rec.timeline(t0 + (t // 100 + 1) * 100 * MS)
    listed = stalls(tl, rec.gaps, t0)["longest_gaps"]
    assert len(listed) == LONGEST_GAPS
    # the first completion opens no gap: gaps of 7 .. 20 ms, the ten longest 11 .. 20
    assert sorted(g["ms"] for g in listed) == [float(6 + i) for i in range(5, LONGEST_GAPS + 5)]
    assert [g["at_s"] for g in listed] == sorted(g["at_s"] for g in listed)
