"""Merge a load run (load.json) and a migration result into one report, plus a PNG.

Times: the load generator records CLOCK_MONOTONIC for everything and one (monotonic, wall)
pair at its start. A migration result with ``started_monotonic`` / ``finished_monotonic`` is
placed directly; one with only Unix times (``started`` / ``finished``, as
:class:`netmigrate.migration.MigrationResult` has) is mapped onto the monotonic clock through
that pair — same machine, so the error is the wall clock's drift over the run (negligible
unless NTP steps it).

"Before" is every whole 100 ms bin from the load start to the migration start; "during" every
whole bin between migration start and end. Ratios are during / before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netmigrate.bench.timeline import errors_between, merged


class ReportError(ValueError):
    pass


def _mono(load: dict[str, Any], mig: dict[str, Any], which: str) -> float:
    direct = mig.get(f"{which}_monotonic")
    if direct is not None:
        return float(direct)
    wall = mig.get(which)
    if not wall:
        raise ReportError(f"the migration result has no {which!r} time")
    clock = load["clock"]
    return clock["monotonic"] + (float(wall) - clock["wall"])


def _window(tl: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    ops, secs, h = merged(tl, start, end)
    count = h.get_total_count()
    return {
        "seconds": round(secs, 3),
        "ops": ops,
        "ops_per_s": round(ops / secs, 1) if secs else None,
        "p50_ms": round(h.get_value_at_percentile(50.0) / 1000, 3) if count else None,
        "p99_ms": round(h.get_value_at_percentile(99.0) / 1000, 3) if count else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def build_report(load: dict[str, Any], mig: dict[str, Any]) -> dict[str, Any]:
    tl = load.get("timeline") or {}
    if not tl.get("ops"):
        raise ReportError("the load run has no timeline (did it run?)")
    start, end = _mono(load, mig, "started"), _mono(load, mig, "finished")
    if end < start:
        raise ReportError("the migration ends before it starts")
    before = _window(tl, load["load_start_monotonic"], start)
    during = _window(tl, start, end)
    after = _window(tl, end, load["load_end_monotonic"])
    duration = end - start
    keys = int(mig.get("keys_copied", 0))
    checker = load["checker"]
    errs = load["errors_total"]
    return {
        "migration_id": mig.get("migration_id"),
        "migration_state": mig.get("state"),
        "migrated_slots": int(mig.get("slots_done", 0)),
        "keys": keys,
        "duration_s": round(duration, 3),
        "keys_per_s": round(keys / duration, 1) if duration > 0 else None,
        "throughput_before_ops": before["ops_per_s"],
        "throughput_during_ops": during["ops_per_s"],
        "throughput_after_ops": after["ops_per_s"],
        "throughput_ratio": _ratio(during["ops_per_s"], before["ops_per_s"]),
        "p50_before_ms": before["p50_ms"],
        "p50_during_ms": during["p50_ms"],
        "p99_before_ms": before["p99_ms"],
        "p99_during_ms": during["p99_ms"],
        "p99_ratio": _ratio(during["p99_ms"], before["p99_ms"]),
        "client_errors": errs["retryable"] + errs["non_retryable"],
        "client_errors_by_kind": load["errors"],
        "client_errors_during": errors_between(tl, start, end),
        "client_retries": load.get("client", {}).get("retries"),
        "checker": {
            "lost_writes": checker["lost_writes"],
            "stale_reads": checker["stale_reads"],
            "duplicates": checker["duplicates"] + checker.get("lost_increments", 0),
            "unknown_values": checker.get("unknown_values", 0),
            "operations": checker["operations"],
            "ok": checker["ok"],
        },
        "windows": {"before": before, "during": during, "after": after},
        "load": {
            "ops": load["ops"],
            "ops_per_s": load["ops_per_s"],
            "config": load["config"],
        },
        "migration_start_s": round(start - tl["t0_monotonic"], 3),
        "migration_end_s": round(end - tl["t0_monotonic"], 3),
    }


def plot(load: dict[str, Any], report: dict[str, Any], path: Path) -> Path:
    """Throughput and p99 over time, migration shaded (the bench plot, reused)."""
    from netmigrate.bench.plots import plot_run

    tl = load["timeline"]
    cfg = load["config"]
    run = {
        "system": "netmigrate",
        "workload": "lab",
        "config": {
            "records": max(cfg["preload"], cfg["workload"]["keys"]),
            "value_size": cfg["workload"]["value_size"],
            "concurrency": cfg["concurrency"],
            "slots_to_migrate": report["migrated_slots"],
        },
        "timeline": {
            "bin_ms": tl["bin_ms"],
            "t_s": tl["t_s"],
            "ops_per_s": tl["ops_per_s"],
            "p99_us": tl["p99_us"],
            "migration_start_s": report["migration_start_s"],
            "migration_end_s": report["migration_end_s"],
        },
        "migration": {"duration_s": report["duration_s"]},
    }
    return plot_run(run, path)


def summary_lines(r: dict[str, Any]) -> list[str]:
    c = r["checker"]
    return [
        f"migrated {r['migrated_slots']} slots, {r['keys']} keys in {r['duration_s']:.2f} s "
        f"({r['keys_per_s']} keys/s), state {r['migration_state']}",
        f"throughput before {r['throughput_before_ops']} ops/s, during "
        f"{r['throughput_during_ops']} ops/s (ratio {r['throughput_ratio']})",
        f"p99 before {r['p99_before_ms']} ms, during {r['p99_during_ms']} ms "
        f"(ratio {r['p99_ratio']})",
        f"client errors {r['client_errors']} {json.dumps(r['client_errors_by_kind'])}",
        f"checker: {'OK' if c['ok'] else 'VIOLATIONS'} (lost writes {c['lost_writes']}, "
        f"stale reads {c['stale_reads']}, duplicates {c['duplicates']}, "
        f"{c['operations']} operations)",
    ]
