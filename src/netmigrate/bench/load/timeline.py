"""Throughput and latency per 100 ms bin on CLOCK_MONOTONIC, mergeable over any time range.

Each bin keeps its own HdrHistogram (microseconds), so a report can merge the bins of any
window (before / during a migration) into exact-bucket percentiles after the fact: the load
generator does not know when a migration starts. Histograms travel base64-encoded in load.json.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from netmigrate.bench.timeline import new_histogram


@dataclass
class Timeline:
    t0: float
    bin_ms: int = 100
    ops: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    hists: list[HdrHistogram] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)

    def _bin(self, t: float) -> int:
        b = int((t - self.t0) * 1000 // self.bin_ms)
        while len(self.ops) <= b:
            self.ops.append(0)
            self.errors.append(0)
            self.hists.append(new_histogram())
        return b

    def record(self, start: float, end: float) -> None:
        b = self._bin(end)
        self.ops[b] += 1
        self.hists[b].record_value(max(1, int((end - start) * 1e6)))

    def error(self, kind: str, t: float | None = None) -> None:
        b = self._bin(time.monotonic() if t is None else t)
        self.errors[b] += 1
        self.error_kinds[kind] += 1

    def to_json(self) -> dict[str, Any]:
        def pct(h: HdrHistogram, q: float) -> int | None:
            return h.get_value_at_percentile(q) if h.get_total_count() else None

        width = self.bin_ms / 1000
        return {
            "t0_monotonic": self.t0,
            "bin_ms": self.bin_ms,
            "t_s": [round(i * width, 3) for i in range(len(self.ops))],
            "ops": self.ops,
            "ops_per_s": [round(n / width, 1) for n in self.ops],
            "errors": self.errors,
            "p50_us": [pct(h, 50.0) for h in self.hists],
            "p99_us": [pct(h, 99.0) for h in self.hists],
            "hdr": [h.encode().decode() if h.get_total_count() else "" for h in self.hists],
        }


def merged(tl: dict[str, Any], start: float, end: float) -> tuple[int, float, HdrHistogram]:
    """(ops, seconds covered, merged histogram) of the whole bins within [start, end)
    (monotonic times)."""
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
