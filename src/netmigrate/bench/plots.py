"""PNG plots of a report: throughput and p99 latency per 100 ms bin, migration marked.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot global state,
no display needed), at a size that keeps each PNG small enough to commit.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

FIGSIZE = (9.0, 5.5)
DPI = 100
PALETTE_COLORS = 64
COLORS = {
    "redis-cluster": "#d62728",
    "redis-cluster-tuned": "#ff7f0e",
    "stop-and-copy": "#1f77b4",
    "netmigrate": "#2ca02c",
}
_FALLBACK = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _color(system: str, i: int) -> str:
    return COLORS.get(system, _FALLBACK[i % len(_FALLBACK)])


def _series(tl: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    t = [x + tl["bin_ms"] / 2000 for x in tl["t_s"]]  # plot each bin at its centre
    thr = tl["ops_per_s"]
    p99 = [math.nan if v is None else v / 1000 for v in tl["p99_us"]]
    return t, thr, p99


def _mark_migration(ax: Any, tl: dict[str, Any], color: str, label: str | None) -> None:
    start, end = tl.get("migration_start_s"), tl.get("migration_end_s")
    if start is None:
        return
    stop = end if end is not None else (tl["t_s"][-1] if tl["t_s"] else start)
    ax.axvspan(start, stop, color=color, alpha=0.12, lw=0, label=label)
    ax.axvline(start, color=color, ls="--", lw=0.9)
    if end is not None:
        ax.axvline(end, color=color, ls=":", lw=0.9)


def _axes(fig: Figure) -> tuple[Any, Any]:
    ax_thr, ax_lat = fig.subplots(2, 1, sharex=True)
    ax_thr.set_ylabel("throughput (ops/s)")
    ax_lat.set_ylabel("p99 latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("time since run start (s), 100 ms bins")
    for ax in (ax_thr, ax_lat):
        ax.grid(True, alpha=0.3)
    return ax_thr, ax_lat


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.axes[0].set_ylim(bottom=0)  # after plotting, so the top still autoscales
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    # A 64-colour palette keeps a line chart crisp at a third of the size: small enough to
    # commit the reference plots.
    with Image.open(buf) as img:
        img.convert("RGB").quantize(colors=PALETTE_COLORS).save(path, optimize=True)
    return path


def _subtitle(run: dict[str, Any]) -> str:
    cfg = run["config"]
    return (
        f"workload {run['workload']}, {cfg['records']:,} keys x {cfg['value_size']} B, "
        f"{cfg['concurrency']} clients, {cfg['slots_to_migrate']:,} slots moved"
    )


def plot_run(run: dict[str, Any], path: Path) -> Path:
    """One run: throughput and p99 over time, migration window shaded."""
    tl = run["timeline"]
    fig = Figure(figsize=FIGSIZE)
    ax_thr, ax_lat = _axes(fig)
    color = _color(run["system"], 0)
    t, thr, p99 = _series(tl)
    ax_thr.plot(t, thr, color=color, lw=1)
    ax_lat.plot(t, p99, color=color, lw=1)
    for ax in (ax_thr, ax_lat):
        _mark_migration(ax, tl, "0.3", "migration" if ax is ax_thr else None)
    mig = run.get("migration", {})
    dur = mig.get("duration_s")
    extra = f", migration {dur:.2f} s" if dur is not None else ", migration did not run"
    if mig.get("error"):
        extra = ", migration FAILED"
    ax_thr.set_title(f"{run['system']}{extra}\n{_subtitle(run)}", fontsize=10)
    ax_thr.legend(loc="best", fontsize=8, framealpha=0.85)
    return _save(fig, path)


def plot_compare(runs: list[dict[str, Any]], path: Path) -> Path:
    """Several systems (same workload) on one time axis."""
    if not runs:
        raise ValueError("nothing to compare")
    fig = Figure(figsize=FIGSIZE)
    ax_thr, ax_lat = _axes(fig)
    for i, run in enumerate(runs):
        tl = run["timeline"]
        color = _color(run["system"], i)
        t, thr, p99 = _series(tl)
        ax_thr.plot(t, thr, color=color, lw=1, label=run["system"])
        ax_lat.plot(t, p99, color=color, lw=1, label=run["system"])
        for ax in (ax_thr, ax_lat):
            _mark_migration(ax, tl, color, None)
    ax_thr.set_title(f"{_subtitle(runs[0])}\nshaded: migration (dashed: start, dotted: end)",
                     fontsize=10)  # fmt: skip
    ax_thr.legend(loc="best", fontsize=8, framealpha=0.85)
    return _save(fig, path)


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every per-run figure plus one comparison per workload; the paths written."""
    written: list[Path] = []
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for run in report["runs"]:
        if not run.get("timeline", {}).get("t_s"):
            continue
        name = f"{run['workload']}-{run['system']}"
        if run.get("sweep"):  # several runs of one system: one figure each
            name += "-" + re.sub(r"[^a-z0-9]+", "-", run["sweep"]["label"].lower()).strip("-")
        written.append(plot_run(run, out_dir / f"{name}.png"))
        by_workload.setdefault(run["workload"], []).append(run)
    for w, runs in sorted(by_workload.items()):
        written.append(plot_compare(runs, out_dir / f"{w}-compare.png"))
    return written
