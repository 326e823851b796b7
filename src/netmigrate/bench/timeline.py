"""The timeline: per-phase latency histograms and 100 ms bins, for every load runner.

The one timeline of the project: the YCSB harness (``netmigrate bench run``) records into a
:class:`Recorder` and switches phases as its migration starts and ends; the load generator
(``netmigrate bench load``) records into one too but cannot know when a migration in another
process runs, so its timeline carries one HdrHistogram per bin (``timeline(..., hdr=True)``)
and :func:`merged` combines the bins of any window after the fact (``netmigrate bench
report``).

The hot path (:meth:`Recorder.record`) costs one HdrHistogram record (the histogram of the
current phase and operation) plus a few list operations for the time bin the operation
completed in. Each bin keeps the raw latencies of its operations, so the timeline's p50/p99
per bin are exact; the per-phase histograms give p50/p99/p99.9 over each phase.

An operation belongs to the phase and the bin in which it *completed* (its latency is only
known then). Failed operations are counted per error kind, not put in latency histograms (as
YCSB does). Events a client handled internally (MOVED, ASK, TRYAGAIN, held writes) are
counted per kind, per phase and per bin.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from netmigrate.bench.ycsb import OP_NAMES

PHASES = ("before", "during", "after")
BEFORE, DURING, AFTER = 0, 1, 2

#: Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def histogram_summary(h: HdrHistogram) -> dict[str, float | int]:
    """Count, mean, max and percentiles (µs) of a histogram; zeros when it is empty."""
    n = h.get_total_count()
    out: dict[str, float | int] = {"count": n}
    if n == 0:
        out.update({name: 0 for name, _ in PERCENTILES})
        out.update({"mean": 0.0, "max": 0})
        return out
    for name, pct in PERCENTILES:
        out[name] = h.get_value_at_percentile(pct)
    out["mean"] = round(h.get_mean_value(), 1)
    out["max"] = h.get_max_value()
    return out


def exact_percentiles(values: array, pcts: tuple[float, ...]) -> list[float]:
    """Nearest-rank percentiles (the smallest value with at least p% at or below it)."""
    n = len(values)
    if not n:
        return [0.0] * len(pcts)
    import numpy as np

    ordered = np.sort(np.frombuffer(values, dtype=np.uint32) if values.typecode == "I" else values)
    out = []
    for p in pcts:
        # The epsilon keeps 99.9% of 1000 at rank 999 despite binary floating point.
        rank = min(n, max(1, math.ceil(p / 100.0 * n - 1e-9)))
        out.append(float(ordered[rank - 1]))
    return out


#: Shortest interval without a completed operation that counts as a client stall.
GAP_NS = 5_000_000


@dataclass
class PhaseMark:
    phase: int
    t_ns: int


class Recorder:
    """Collects one run phase; also the :class:`~netmigrate.bench.kv.ClientEvents` sink."""

    def __init__(
        self,
        bin_ms: int = 100,
        clock: Callable[[], int] = time.perf_counter_ns,
        op_names: Sequence[str] = OP_NAMES,
    ) -> None:
        if bin_ms <= 0:
            raise ValueError(f"bin width must be positive, got {bin_ms} ms")
        self.bin_ms = bin_ms
        #: Operation index (the ``op`` of :meth:`record`) -> name in the summaries.
        self.op_names = tuple(op_names)
        self._bin_ns = bin_ms * 1_000_000
        self._clock = clock
        self.t0_ns = clock()
        self.phase = BEFORE
        self.marks: list[PhaseMark] = [PhaseMark(BEFORE, self.t0_ns)]
        n_ops = len(self.op_names)
        self._hist = [[new_histogram() for _ in range(n_ops)] for _ in PHASES]
        self._phase_errors: list[dict[str, int]] = [{} for _ in PHASES]
        self._phase_events: list[dict[str, int]] = [{} for _ in PHASES]
        # Timeline: index = bin number since t0.
        self._bin_lat: list[array] = []
        self._bin_ops: list[list[int]] = [[] for _ in range(n_ops)]
        self._bin_errors: dict[str, list[int]] = {}
        self._bin_events: dict[str, list[int]] = {}
        self.ops_total = 0
        self.errors_total = 0
        self.events_total = 0
        #: Intervals (start, end ns) of at least :data:`GAP_NS` without a completed operation,
        #: between the first and the last completion (the client stalls).
        self.gaps: list[tuple[int, int]] = []
        self._last_end = 0

    def start(self) -> None:
        """(Re)start the clock: bin 0 and phase "before" begin now."""
        self.t0_ns = self._clock()
        self.marks = [PhaseMark(BEFORE, self.t0_ns)]

    def now(self) -> int:
        return self._clock()

    def set_phase(self, phase: int, t_ns: int | None = None) -> None:
        if phase != self.phase:
            self.phase = phase
            self.marks.append(PhaseMark(phase, self._clock() if t_ns is None else t_ns))

    # -- several processes -------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """What :meth:`merge` needs of this recorder (plain data: it crosses processes)."""
        return {
            "bin_ms": self.bin_ms,
            "t0_ns": self.t0_ns,
            "hist": [
                [h.encode() if h.get_total_count() else b"" for h in row] for row in self._hist
            ],
            "bin_lat": [a.tobytes() for a in self._bin_lat],
            "bin_ops": self._bin_ops,
            "bin_errors": self._bin_errors,
            "bin_events": self._bin_events,
            "phase_errors": self._phase_errors,
            "phase_events": self._phase_events,
            "ops_total": self.ops_total,
            "gaps": self.gaps,
            "errors_total": self.errors_total,
            "events_total": self.events_total,
        }

    def merge(self, other: dict[str, Any]) -> None:
        """Add another recorder's :meth:`export` (same clock, bin width and start) to this one,
        as if its operations had been recorded here."""
        if other["bin_ms"] != self.bin_ms or other["t0_ns"] != self.t0_ns:
            raise ValueError("merged recorders must share their bin width and start")
        for mine, theirs in zip(self._hist, other["hist"], strict=True):
            for h, blob in zip(mine, theirs, strict=True):
                if blob:
                    h.add(HdrHistogram.decode(blob))
        n = len(other["bin_lat"])
        if n:
            self._bin(self.t0_ns + (n - 1) * self._bin_ns)
        for b, raw in enumerate(other["bin_lat"]):
            self._bin_lat[b].frombytes(raw)
        for op, series in enumerate(other["bin_ops"]):
            for b, count in enumerate(series):
                self._bin_ops[op][b] += count
        size = len(self._bin_lat)
        for mine_series, theirs_series in (
            (self._bin_errors, other["bin_errors"]),
            (self._bin_events, other["bin_events"]),
        ):
            for kind, series in theirs_series.items():
                target = mine_series.setdefault(kind, [0] * size)
                for b, count in enumerate(series):
                    target[b] += count
        for mine_d, theirs_d in (
            *zip(self._phase_errors, other["phase_errors"], strict=True),
            *zip(self._phase_events, other["phase_events"], strict=True),
        ):
            for kind, count in theirs_d.items():
                mine_d[kind] = mine_d.get(kind, 0) + count
        if other["ops_total"]:
            # A stall of all clients is a stall of every one of them: intersect.
            self.gaps = (
                intersect(self.gaps, other["gaps"]) if self.ops_total else list(other["gaps"])
            )
        self.ops_total += other["ops_total"]
        self.errors_total += other["errors_total"]
        self.events_total += other["events_total"]

    def _bin(self, t_ns: int) -> int:
        b = (t_ns - self.t0_ns) // self._bin_ns
        if b < 0:
            b = 0
        lat = self._bin_lat
        if b >= len(lat):
            grow = b + 1 - len(lat)
            for _ in range(grow):
                lat.append(array("I"))
            for ops in self._bin_ops:
                ops.extend([0] * grow)
            for series in self._bin_errors.values():
                series.extend([0] * grow)
            for series in self._bin_events.values():
                series.extend([0] * grow)
        return b

    # -- hot path -----------------------------------------------------------------------
    def record(self, op: int, start_ns: int, end_ns: int) -> None:
        us = (end_ns - start_ns) // 1000
        if us < LOWEST_US:
            us = LOWEST_US
        elif us > HIGHEST_US:
            us = HIGHEST_US
        self._hist[self.phase][op].record_value(us)
        b = self._bin(end_ns)
        self._bin_lat[b].append(us if us < 0xFFFFFFFF else 0xFFFFFFFF)
        self._bin_ops[op][b] += 1
        self.ops_total += 1
        last = self._last_end
        if end_ns > last:
            if end_ns - last >= GAP_NS and last:
                self.gaps.append((last, end_ns))
            self._last_end = end_ns

    def error(self, kind: str, t_ns: int | None = None) -> None:
        self._count(kind, t_ns, self._phase_errors, self._bin_errors)
        self.errors_total += 1

    def event(self, kind: str, n: int = 1) -> None:
        self._count(kind, None, self._phase_events, self._bin_events, n)
        self.events_total += n

    def _count(
        self,
        kind: str,
        t_ns: int | None,
        per_phase: list[dict[str, int]],
        per_bin: dict[str, list[int]],
        n: int = 1,
    ) -> None:
        b = self._bin(self._clock() if t_ns is None else t_ns)
        d = per_phase[self.phase]
        d[kind] = d.get(kind, 0) + n
        series = per_bin.get(kind)
        if series is None:
            series = per_bin[kind] = [0] * len(self._bin_lat)
        series[b] += n

    # -- summaries ----------------------------------------------------------------------
    def phase_bounds(self, end_ns: int) -> dict[int, tuple[int, int]]:
        """Phase -> (start, end) in ns for every phase that occurred."""
        bounds: dict[int, tuple[int, int]] = {}
        for i, mark in enumerate(self.marks):
            stop = self.marks[i + 1].t_ns if i + 1 < len(self.marks) else end_ns
            bounds[mark.phase] = (mark.t_ns, stop)
        return bounds

    def phase_summary(self, end_ns: int) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        bounds = self.phase_bounds(end_ns)
        for p, name in enumerate(PHASES):
            if p not in bounds:
                continue
            start, stop = bounds[p]
            seconds = max((stop - start) / 1e9, 1e-9)
            total = new_histogram()
            per_op: dict[str, Any] = {}
            ops = 0
            for op, op_name in enumerate(self.op_names):
                h = self._hist[p][op]
                if h.get_total_count():
                    total.add(h)
                    per_op[op_name] = histogram_summary(h)
                    ops += h.get_total_count()
            out[name] = {
                "start_s": round((start - self.t0_ns) / 1e9, 4),
                "seconds": round(seconds, 4),
                "ops": ops,
                "ops_per_s": round(ops / seconds, 1),
                "latency_us": {"all": histogram_summary(total), **per_op},
                "errors": dict(sorted(self._phase_errors[p].items())),
                "client_events": dict(sorted(self._phase_events[p].items())),
            }
        return out

    def histogram(self, phase: int, op: int | None = None) -> HdrHistogram:
        """A copy of one phase's histogram (all operations if ``op`` is None)."""
        h = new_histogram()
        for o in range(len(self.op_names)) if op is None else (op,):
            h.add(self._hist[phase][o])
        return h

    def bin_end(self, t_ns: int) -> int:
        """The end of the bin holding ``t_ns``: a ``timeline`` end that keeps that bin."""
        return self.t0_ns + ((t_ns - self.t0_ns) // self._bin_ns + 1) * self._bin_ns

    def timeline(self, end_ns: int, hdr: bool = False) -> dict[str, Any]:
        """Per-bin series; bins run from t0 to ``end_ns`` (a partial last bin is dropped).

        ``hdr``: also each bin's latencies as an encoded HdrHistogram and ``t0_monotonic``
        (the recorder's clock must then be ``time.monotonic_ns``), for :func:`merged`.
        """
        n_bins = max(0, (end_ns - self.t0_ns) // self._bin_ns)
        self._bin(self.t0_ns + max(n_bins - 1, 0) * self._bin_ns)
        width = self.bin_ms / 1000.0
        n_ops = len(self.op_names)
        ops = [sum(self._bin_ops[op][b] for op in range(n_ops)) for b in range(n_bins)]
        # None marks a bin without any completed operation (a stall), not a zero latency.
        p50: list[int | None] = []
        p99: list[int | None] = []
        p999: list[int | None] = []
        mx: list[int | None] = []
        for b in range(n_bins):
            if not self._bin_lat[b]:
                for series in (p50, p99, p999, mx):
                    series.append(None)
                continue
            q = exact_percentiles(self._bin_lat[b], (50.0, 99.0, 99.9, 100.0))
            p50.append(int(q[0]))
            p99.append(int(q[1]))
            p999.append(int(q[2]))
            mx.append(int(q[3]))
        phase = []
        for b in range(n_bins):
            t_end = self.t0_ns + (b + 1) * self._bin_ns
            current = BEFORE
            for mark in self.marks:
                if mark.t_ns < t_end:
                    current = mark.phase
            phase.append(PHASES[current])
        out: dict[str, Any] = {
            "bin_ms": self.bin_ms,
            "t_s": [round(b * width, 3) for b in range(n_bins)],
            "ops": ops,
            "ops_per_s": [round(n / width, 1) for n in ops],
            "ops_by_type": {
                self.op_names[op]: self._bin_ops[op][:n_bins]
                for op in range(n_ops)
                if any(self._bin_ops[op][:n_bins])
            },
            "p50_us": p50,
            "p99_us": p99,
            "p999_us": p999,
            "max_us": mx,
            "errors": {k: v[:n_bins] for k, v in sorted(self._bin_errors.items())},
            "client_events": {k: v[:n_bins] for k, v in sorted(self._bin_events.items())},
            "phase": phase,
        }
        if hdr:
            out["t0_monotonic"] = self.t0_ns / 1e9
            out["hdr"] = [_encode(self._bin_lat[b]) for b in range(n_bins)]
        return out


def intersect(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The intervals (sorted, disjoint) covered by both ``a`` and ``b``, at least
    :data:`GAP_NS` long."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi - lo >= GAP_NS:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def stalls(tl: dict[str, Any], gaps: Sequence[tuple[int, int]], t0_ns: int) -> dict[str, Any]:
    """The run's client stalls: the longest gap between completed operations (of all
    clients together) over the run and over the migration, and the number of bins from the
    migration's start on whose throughput falls under half of the median bin before it."""
    start, end = tl.get("migration_start_s"), tl.get("migration_end_s")
    longest: tuple[int, int] | None = max(gaps, key=lambda g: g[1] - g[0], default=None)
    during = None
    if start is not None:
        lo = t0_ns + int(start * 1e9)
        hi = None if end is None else t0_ns + int(end * 1e9)
        overlapping = [g for g in gaps if g[1] > lo and (hi is None or g[0] < hi)]
        during = max(overlapping, key=lambda g: g[1] - g[0], default=None)
    before = sorted(
        n for n, t in zip(tl["ops"], tl["t_s"], strict=True)
        if start is None or t + tl["bin_ms"] / 1000 <= start
    )  # fmt: skip
    median = before[len(before) // 2] if before else None
    low: list[float] = []
    if median and start is not None:
        low = [
            t for n, t in zip(tl["ops"], tl["t_s"], strict=True)
            if t + tl["bin_ms"] / 1000 > start and n < median / 2
        ]  # fmt: skip
    return {
        "gap_threshold_ms": GAP_NS / 1e6,
        "longest_gap_ms": None if longest is None else round((longest[1] - longest[0]) / 1e6, 2),
        "longest_gap_at_s": None if longest is None else round((longest[0] - t0_ns) / 1e9, 3),
        "longest_gap_during_ms": None
        if during is None
        else round((during[1] - during[0]) / 1e6, 2),
        "gaps_over_threshold": len(gaps),
        "median_ops_per_bin_before": median,
        "low_bins": len(low),
        "low_bins_at_s": low[:20],
        "longest_gaps": [_gap_context(tl, g, t0_ns) for g in _longest(gaps, LONGEST_GAPS)],
    }


#: Gaps listed with their context in a report's ``stalls``.
LONGEST_GAPS = 10


def _longest(gaps: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The ``n`` longest gaps, in time order."""
    return sorted(sorted(gaps, key=lambda g: g[0] - g[1])[:n])


def _gap_context(tl: dict[str, Any], gap: tuple[int, int], t0_ns: int) -> dict[str, Any]:
    """One gap with what the clients saw around it, so a report can attribute it: the
    client events and errors counted in the bins it touches (a timeout resend, a BUSY or
    WRONG_OWNER retry there points at the client's side; none at a server that did not
    answer) and the phase it began in."""
    bin_ns = tl["bin_ms"] * 1_000_000
    n = len(tl["ops"])
    first = min(max((gap[0] - t0_ns) // bin_ns, 0), n)
    last = min(max((gap[1] - t0_ns) // bin_ns + 1, first), n)
    around: dict[str, int] = {}
    for series in (tl["client_events"], tl["errors"]):
        for kind, counts in series.items():
            k = sum(counts[first:last])
            if k:
                around[kind] = around.get(kind, 0) + k
    return {
        "at_s": round((gap[0] - t0_ns) / 1e9, 3),
        "ms": round((gap[1] - gap[0]) / 1e6, 2),
        "phase": tl["phase"][first] if first < n else None,
        "events_around": dict(sorted(around.items())),
    }


def _encode(latencies_us: array) -> str:
    """One bin's latencies as a base64 HdrHistogram ("" for an empty bin)."""
    if not latencies_us:
        return ""
    h = new_histogram()
    for us in latencies_us:
        h.record_value(us)
    return h.encode().decode()


def merged(tl: dict[str, Any], start: float, end: float) -> tuple[int, float, HdrHistogram]:
    """(ops, seconds covered, merged histogram) of the whole bins of a ``timeline(hdr=True)``
    within [start, end) (monotonic seconds)."""
    t0, width = tl["t0_monotonic"], tl["bin_ms"] / 1000
    h = new_histogram()
    ops = 0
    n = 0
    for i, count in enumerate(tl["ops"]):
        b0 = t0 + i * width
        if b0 < start or b0 + width > end:
            continue
        n += 1
        ops += count
        if tl["hdr"][i]:
            h.add(HdrHistogram.decode(tl["hdr"][i].encode()))
    return ops, n * width, h


def errors_between(tl: dict[str, Any], start: float, end: float) -> dict[str, int]:
    """Errors per kind in the bins of a ``timeline(hdr=True)`` whose middle lies within
    [start, end) (monotonic seconds); kinds without any there are left out."""
    t0, width = tl["t0_monotonic"], tl["bin_ms"] / 1000
    out: dict[str, int] = {}
    for kind, series in sorted(tl["errors"].items()):
        n = sum(c for i, c in enumerate(series) if start <= t0 + (i + 0.5) * width < end)
        if n:
            out[kind] = n
    return out
