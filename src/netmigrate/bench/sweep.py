"""Equal-speed comparison: NetMigrate at several copy rates, Redis Cluster at several pipeline
depths, one run per point; then an open-loop run of each at a share of its measured capacity.

A faster migration costs clients more, so a ratio means little without the speed it was bought
at. The sweep plots every closed-loop run as one point, throughput during ÷ before (y) against
migration duration (x), one panel per workload (``sweep.png``), and compares the two systems at
every duration both reach: NetMigrate's curve (linear between its points) against each Redis
Cluster point inside NetMigrate's range, and the other way round (:func:`comparison`).

The open-loop runs offer ``open_loop`` x the "before" throughput of each system's first
closed-loop run (its capacity under the same budgets) at a fixed rate, latency measured from
each operation's intended start, and report p99 during ÷ before.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The two systems of the sweep and the knob each is swept over.
NETMIGRATE, CLUSTER = "netmigrate", "redis-cluster-tuned"
RATE, PIPELINE = "netmigrate_rate", "reshard_pipeline"


@dataclass(frozen=True)
class Point:
    """One run of the sweep: which system, which knob value, closed or open loop."""

    system: str
    knob: str
    value: int
    #: Offered ops/s of an open-loop run (None: closed loop).
    offered: float | None = None

    @property
    def label(self) -> str:
        what = (
            ("rate unlimited" if self.value == 0 else f"rate {self.value:,}/s")
            if self.knob == RATE
            else f"pipeline {self.value}"
        )
        return what + ("" if self.offered is None else f", open loop {self.offered:,.0f} ops/s")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "label": self.label}


def closed_points(rates: Sequence[int], pipelines: Sequence[int], cluster: str) -> list[Point]:
    """The closed-loop runs, the two systems' settings interleaved in the order given (the
    first of each is its reference setting)."""
    nm = [Point(NETMIGRATE, RATE, r) for r in rates]
    rc = [Point(cluster, PIPELINE, p) for p in pipelines]
    out: list[Point] = []
    for i in range(max(len(nm), len(rc))):
        out += [p[i] for p in (nm, rc) if i < len(p)]
    return out


def capacity(run: dict[str, Any]) -> float | None:
    before = run.get("phases", {}).get("before")
    return None if not before else float(before["ops_per_s"])


def _xy(runs: Sequence[dict[str, Any]], workload: str, system: str) -> list[tuple[float, float]]:
    pts = []
    for r in runs:
        sw = r.get("sweep") or {}
        if r["workload"] != workload or sw.get("system") != system or sw.get("offered"):
            continue
        x = r.get("migration", {}).get("duration_s")
        y = r.get("ratios", {}).get("throughput_during_before")
        if x is not None and y is not None:
            pts.append((float(x), float(y)))
    return sorted(pts)


def _interp(pts: Sequence[tuple[float, float]], x: float) -> float | None:
    """The piecewise-linear curve through ``pts`` (sorted by x) at ``x``; None outside."""
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(pts) == 1 and pts[0][0] == x:
        return pts[0][1]
    return None


def comparison(runs: Sequence[dict[str, Any]], cluster: str = CLUSTER) -> dict[str, Any]:
    """Per workload, every duration both systems reach (each point of one system inside the
    other's range) with both ratios there, and whether NetMigrate's is higher at all of them."""
    out: dict[str, Any] = {}
    for w in sorted({r["workload"] for r in runs}):
        nm, rc = _xy(runs, w, NETMIGRATE), _xy(runs, w, cluster)
        shared = []
        for x, y in rc:
            other = _interp(nm, x)
            if other is not None:
                shared.append({"duration_s": x, "netmigrate": round(other, 4), "cluster": y})
        for x, y in nm:
            other = _interp(rc, x)
            if other is not None:
                shared.append({"duration_s": x, "netmigrate": y, "cluster": round(other, 4)})
        shared.sort(key=lambda s: s["duration_s"])
        out[w] = {
            "netmigrate": nm,
            "cluster": rc,
            "shared_durations": shared,
            "netmigrate_higher_everywhere": (
                all(s["netmigrate"] > s["cluster"] for s in shared) if shared else None
            ),
        }
    return out


def markdown(runs: Sequence[dict[str, Any]]) -> str:
    """One row per sweep run: the knob, the speed and what clients kept."""
    head = (
        "| workload | system | setting | migration s | keys/s | thr during/before | "
        "p99 during/before | longest stall ms | bins < median/2 | errors | verified |"
    )
    lines = [head, "|" + "---|" * 2 + "---|" + "---:|" * 7 + "---|"]
    for r in runs:
        sw = r.get("sweep") or {}
        mig, ratios, st = r.get("migration", {}), r.get("ratios", {}), r.get("stalls") or {}
        ver = r.get("verification")

        def f(x: Any, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        lines.append(
            f"| {r['workload']} | {r['system']} | {sw.get('label', '-')} "
            f"| {f(mig.get('duration_s'), '.2f')} | {f(mig.get('keys_per_s'), ',.0f')} "
            f"| {f(ratios.get('throughput_during_before'), '.2f')} "
            f"| {f(ratios.get('p99_during_before'), '.2f')} "
            f"| {f(st.get('longest_gap_ms'), '.1f')} | {f(st.get('low_bins'), 'd')} "
            f"| {r.get('totals', {}).get('error_count', 0)} "
            f"| {'-' if ver is None else ('ok' if ver.get('ok') else 'FAIL')} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[dict[str, Any]], path: Path, cluster: str = CLUSTER) -> Path:
    """``sweep.png``: throughput ratio against migration duration, one panel per workload."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from netmigrate.bench.plots import COLORS, DPI, PALETTE_COLORS

    workloads = sorted({r["workload"] for r in runs})
    fig = Figure(figsize=(5.0 * max(1, len(workloads)), 4.2))
    FigureCanvasAgg(fig)
    for i, w in enumerate(workloads):
        ax = fig.add_subplot(1, len(workloads), i + 1)
        for system, marker in ((NETMIGRATE, "o"), (cluster, "s")):
            mine = [
                r for r in runs
                if r["workload"] == w and (r.get("sweep") or {}).get("system") == system
                and not (r.get("sweep") or {}).get("offered")
            ]  # fmt: skip
            pts = sorted(
                (r["migration"]["duration_s"], r["ratios"]["throughput_during_before"],
                 r["sweep"]["label"])
                for r in mine
                if r.get("migration", {}).get("duration_s") is not None
                and r.get("ratios", {}).get("throughput_during_before") is not None
            )  # fmt: skip
            if not pts:
                continue
            xs, ys, _labels = zip(*pts, strict=True)
            ax.plot(xs, ys, marker=marker, color=COLORS.get(system, "#7f7f7f"), label=system)
            for x, y, text in pts:
                ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("migration duration (s, log)")
        ax.set_ylabel("throughput during / before")
        ax.set_title(f"workload {w}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buf).convert("RGB").quantize(PALETTE_COLORS).save(path, optimize=True)
    return path
