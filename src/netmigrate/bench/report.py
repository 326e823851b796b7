"""The report writer: every ``report.json`` of the project, one format.

Two commands write it: ``netmigrate bench run|all`` (YCSB runs of several systems, see
:mod:`netmigrate.bench.runner`) and ``netmigrate bench report`` (one load run of ``netmigrate
bench load`` merged with one migration result: :func:`migration_under_load`, what the demo and
``playbooks/bench.yml`` write). Both are schema ``netmigrate.bench/2``, so ``netmigrate bench
compare`` tables and plots either; a migration-under-load report also carries its summary as
flat top-level keys (see :func:`migration_under_load`).

Layout of ``OUT/`` after ``netmigrate bench run --out OUT``::

    report.json                 everything below, schema ``netmigrate.bench/2``
    table.md                    the side-by-side table (markdown)
    plots/<W>-<system>.png      throughput and p99 over time of one run
    plots/<W>-compare.png       all systems of workload W on one time axis

Schema ``netmigrate.bench/2`` (times in seconds, latencies in microseconds)::

    {
      "schema": "netmigrate.bench/2",
      "created": ISO-8601 UTC,
      "command": the command line,
      "machine": {hostname, platform, python, cpu_model, cpu_count, memory_mb,
                  loadavg_start, loadavg_end, redis_server, redis_py, hiredis},
      "config": RunConfig fields shared by all runs (+ "systems", "workloads"),
      "harness_overhead": see netmigrate.bench.overhead (null if skipped),
      "runs": [ {
        "system", "system_description", "system_info": {...}, "workload",
        "workload_mix": {read, update, insert, rmw, distribution},
        "config": {...RunConfig, slots_to_migrate},
        "setup_s", "load": {records, seconds, records_per_s, batch},
        "keys_per_node_before", "keys_per_node_after": {server: keys},
        "run_s", "harness_cpu_pct" (load generator CPU, % of one core, run phase),
        "phases": {"before"|"during"|"after": {
            start_s, seconds, ops, ops_per_s,
            latency_us: {"all"|"read"|"update"|"insert"|"rmw":
                         {count, p50, p90, p99, p999, mean, max}},
            errors: {kind: n}, client_events: {kind: n}}},
        "ratios": {throughput_during_before, p50_during_before, p99_during_before,
                   p999_during_before, and the same for after},
        "totals": {ops, errors: {kind: n}, error_count, client_events: {kind: n},
                   redirections (MOVED + ASK + TRYAGAIN)},
        "migration": {slots, slot_ranges, start_s, end_s, call_s, return_s, duration_s,
                      slots_moved, keys_moved, keys_per_s, error, details: {...}},
        "load_generator": {processes, role (budget role they ran in, or null), workers: [n per
                           process], start_s, problems: []} (netmigrate.bench.loadprocs;
                           {processes: 1, role: null}: the workers ran in the harness),
        "stalls": {gap_threshold_ms, longest_gap_ms, longest_gap_at_s,
                   longest_gap_during_ms (no client completed anything for that long),
                   gaps_over_threshold, median_ops_per_bin_before, low_bins (bins from the
                   migration's start under half that median), low_bins_at_s: [first 20],
                   longest_gaps: [{at_s, ms, phase, events_around: {kind: n} (client
                   events and errors in the bins the gap touches)}: the 10 longest, in
                   time order]},
        "sweep": {system, knob, value, offered, label} (``bench sweep`` runs only; the
                 report then also has a top-level "sweep": netmigrate.bench.sweep.comparison),
        "server_counters": {counter: change over the run phase} (Redis Cluster:
                           errorstat_MOVED/ASK/TRYAGAIN/... summed over nodes; both peers:
                           cpu_ms_<server>, connections_<server> accepted),
        "cpu": {budgets: {period_us, shares: {role: cores}} or null (no budgets),
                harness_in: role whose cgroup the load generator shares, or null,
                marks: boundaries read ("start", "started", "finished", "end"),
                roles: {role: {share, phases: {"before"|"during"|"after": {wall_s,
                        usage_s, share, used_pct (of the budget; of one core without one),
                        throttled_s, nr_throttled}}}},
                saturated: ["role phase" at >= 90 % of its budget]}
               (netmigrate.bench.cpu; role "harness" is the load generator process),
        "verification": {history: netmigrate.bench.history.CheckResult.summary() of the
                         run's history and final sweep, keys_checked, lost_writes,
                         stale_reads, unknown_values, slots_on_target, slots_expected,
                         slots_not_moved, other_slots_changed, slots_ok, ok, sweep_s,
                         check_s, seconds},
        "timeline": {bin_ms, t_s[], ops[], ops_per_s[], ops_by_type{op: []},
                     p50_us[], p99_us[], p999_us[], max_us[] (null: no op completed),
                     errors{kind: []}, client_events{kind: []}, phase[],
                     migration_start_s, migration_end_s,
                     migration_progress: [[t_s, done, total, unit], ...]}
      } ]
    }

Error kinds are Redis error codes (``TRYAGAIN``, ``CLUSTERDOWN``) or exception class names;
client events are ``MOVED``, ``ASK``, ``TRYAGAIN`` (followed by the client) and
``WRITE_HELD`` (stop-and-copy).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from netmigrate.bench import cpu
from netmigrate.bench.load import cpu_samples
from netmigrate.bench.timeline import errors_between, histogram_summary, merged

SCHEMA = "netmigrate.bench/2"
#: Schemas ``compare`` reads. /1 differs only in ``verification`` (the former write checker's
#: final_sweep / run_reads counts), which the table reads by its common keys.
READABLE_SCHEMAS = (SCHEMA, "netmigrate.bench/1")

#: Keys every run section has (``verification`` only when verification ran).
RUN_KEYS = (
    "system", "workload", "config", "load", "phases", "ratios", "totals", "migration",
    "timeline",
)  # fmt: skip
PHASE_KEYS = ("start_s", "seconds", "ops", "ops_per_s", "latency_us", "errors", "client_events")
LATENCY_KEYS = ("count", "p50", "p90", "p99", "p999", "mean", "max")


def machine_info() -> dict[str, Any]:
    """Facts about the host that change what the numbers mean."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_mb"] = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    try:
        from netmigrate.bench.redis_server import redis_version

        info["redis_server"] = redis_version()
    except Exception as exc:  # a report without redis still says why
        info["redis_server"] = f"unavailable: {exc}"
    import redis

    info["redis_py"] = redis.__version__
    try:
        import hiredis

        info["hiredis"] = getattr(hiredis, "__version__", "installed")
    except ImportError:
        info["hiredis"] = None
    return info


def _ratio(a: float | None, b: float | None, digits: int = 4) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def ratios(phases: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """during/before and after/before of throughput and latency percentiles."""
    out: dict[str, float | None] = {}
    before = phases.get("before")
    for name in ("during", "after"):
        p = phases.get(name)
        if not before or not p:
            continue
        out[f"throughput_{name}_before"] = _ratio(p["ops_per_s"], before["ops_per_s"])
        for pct in ("p50", "p99", "p999"):
            out[f"{pct}_{name}_before"] = _ratio(
                p["latency_us"]["all"][pct], before["latency_us"]["all"][pct]
            )
    return out


def new_report(config: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["netmigrate", "bench", *(sys.argv[2:] if argv is None else argv)]),
        "machine": machine_info(),
        "config": config,
        "harness_overhead": None,
        "runs": [],
    }


def finish_report(report: dict[str, Any]) -> None:
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]


def validate_report(report: dict[str, Any]) -> list[str]:
    """Problems with a report's shape (empty list: valid). Used by ``compare`` and tests."""
    problems: list[str] = []
    if report.get("schema") not in READABLE_SCHEMAS:
        problems.append(f"schema is {report.get('schema')!r}, expected one of {READABLE_SCHEMAS}")
    for key in ("machine", "config", "runs"):
        if key not in report:
            problems.append(f"missing top-level key {key!r}")
    for i, run in enumerate(report.get("runs", [])):
        where = f"runs[{i}]"
        for key in RUN_KEYS:
            if key not in run:
                problems.append(f"{where}: missing {key!r}")
        for name, phase in run.get("phases", {}).items():
            for key in PHASE_KEYS:
                if key not in phase:
                    problems.append(f"{where}.phases.{name}: missing {key!r}")
            lat = phase.get("latency_us", {}).get("all", {})
            for key in LATENCY_KEYS:
                if key not in lat:
                    problems.append(f"{where}.phases.{name}.latency_us.all: missing {key!r}")
        tl = run.get("timeline", {})
        n = len(tl.get("t_s", []))
        for key in ("ops", "ops_per_s", "p50_us", "p99_us", "phase"):
            if len(tl.get(key, [])) != n:
                problems.append(f"{where}.timeline.{key}: length differs from t_s ({n})")
    return problems


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def load_reports(paths: list[Path]) -> dict[str, Any]:
    """Read report.json files (or directories holding one) and merge their runs.

    The first report's header (machine, config, harness overhead) is kept; runs of later
    reports are appended. Raises ``ValueError`` naming the file for anything unreadable.
    """
    merged: dict[str, Any] | None = None
    for p in paths:
        file = p / "report.json" if p.is_dir() else p
        try:
            report = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read report {file}: {exc}") from exc
        problems = validate_report(report)
        if problems:
            raise ValueError(f"{file} is not a bench report: " + "; ".join(problems[:5]))
        if merged is None:
            merged = report
        else:
            merged["runs"].extend(report["runs"])
            if merged.get("harness_overhead") is None:
                merged["harness_overhead"] = report.get("harness_overhead")
    if merged is None:
        raise ValueError("no report given")
    return merged


# -- migration under load: one load run + one migration result -------------------------------


class ReportError(ValueError):
    pass


def _mono(load: dict[str, Any], mig: dict[str, Any], which: str) -> float:
    """A migration time on the load run's CLOCK_MONOTONIC.

    A result with ``started_monotonic`` / ``finished_monotonic`` is placed directly; one with
    only Unix times (``started`` / ``finished``, as :class:`netmigrate.migration.MigrationResult`
    has) is mapped through the (monotonic, wall) pair the load run took at its start — same
    machine, so the error is the wall clock's drift over the run (negligible unless NTP steps
    it)."""
    direct = mig.get(f"{which}_monotonic")
    if direct is not None:
        return float(direct)
    wall = mig.get(which)
    if not wall:
        raise ReportError(f"the migration result has no {which!r} time")
    clock = load["clock"]
    return clock["monotonic"] + (float(wall) - clock["wall"])


def _phase(tl: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """A run phase (PHASE_KEYS) from the whole timeline bins within [start, end)."""
    ops, secs, h = merged(tl, start, end)
    return {
        "start_s": round(start - tl["t0_monotonic"], 4),
        "seconds": round(secs, 4),
        "ops": ops,
        "ops_per_s": round(ops / secs, 1) if secs else None,
        "latency_us": {"all": histogram_summary(h)},
        "errors": errors_between(tl, start, end),
        "client_events": {},
    }


def _ms(us: float | None, count: int) -> float | None:
    return round(us / 1000, 3) if count and us is not None else None


def _load_run(load: dict[str, Any], mig: dict[str, Any], start: float, end: float) -> dict:
    """The run section (RUN_KEYS) of a migration under ``netmigrate bench load``."""
    tl = load["timeline"]
    t0 = tl["t0_monotonic"]
    phases = {
        "before": _phase(tl, load["load_start_monotonic"], start),
        "during": _phase(tl, start, end),
        "after": _phase(tl, end, load["load_end_monotonic"]),
    }
    cfg = load["config"]
    duration = end - start
    keys = int(mig.get("keys_copied", 0))
    slots = int(mig.get("slots_done", 0))
    checker = load["checker"]
    errors: dict[str, int] = {}
    for by_kind in load["errors"].values():
        for kind, n in by_kind.items():
            errors[kind] = errors.get(kind, 0) + n
    width = tl["bin_ms"] / 1000
    phase_of_bin = [
        "before" if t0 + (i + 1) * width <= start else "during" if t0 + i * width < end else "after"
        for i in range(len(tl["t_s"]))
    ]
    timeline = {k: v for k, v in tl.items() if k != "hdr"}
    timeline.update(
        phase=phase_of_bin,
        migration_start_s=round(start - t0, 3),
        migration_end_s=round(end - t0, 3),
    )
    return {
        "system": "netmigrate",
        "system_description": "netmigrate bench load against a keyspace, migrated by netmigrate",
        "workload": "lab",
        "workload_mix": cfg["workload"].get("mix"),
        "config": {
            "records": max(cfg["preload"], cfg["workload"]["keys"]),
            "value_size": cfg["workload"]["value_size"],
            "concurrency": cfg["concurrency"],
            "slots_to_migrate": slots,
            "load": cfg,
        },
        "load": {"records": cfg["preload"], "seconds": load.get("preload_s")},
        "phases": phases,
        "ratios": ratios(phases),
        "totals": {
            "ops": load["ops"],
            "errors": dict(sorted(errors.items())),
            "error_count": sum(errors.values()),
            "client_events": {},
            "redirections": 0,
        },
        "migration": {
            "migration_id": mig.get("migration_id"),
            "state": mig.get("state"),
            "slots": slots,
            "start_s": round(start - t0, 4),
            "end_s": round(end - t0, 4),
            "duration_s": round(duration, 4),
            "slots_moved": slots,
            "keys_moved": keys,
            "keys_per_s": round(keys / duration, 1) if duration > 0 else None,
            "error": mig.get("error"),
        },
        "verification": {
            "history": checker,
            "lost_writes": checker["lost_writes"],
            "stale_reads": checker["stale_reads"],
            "unknown_values": checker.get("unknown_values", 0),
            "ok": checker["ok"],
        },
        "timeline": timeline,
    }


def migration_under_load(
    load: dict[str, Any], mig: dict[str, Any], argv: list[str] | None = None
) -> dict[str, Any]:
    """The report of one migration under ``netmigrate bench load``.

    A bench report (one run, system ``netmigrate``, workload ``lab``) whose top level also
    holds the run's summary, flat, as the demo prints it: "before" is every whole 100 ms bin
    from the load start to the migration start, "during" every whole bin between migration
    start and end; ratios are during / before.
    """
    tl = load.get("timeline") or {}
    if not tl.get("ops"):
        raise ReportError("the load run has no timeline (did it run?)")
    start, end = _mono(load, mig, "started"), _mono(load, mig, "finished")
    if end < start:
        raise ReportError("the migration ends before it starts")
    run = _load_run(load, mig, start, end)
    run["cpu"] = cpu_samples.section(load.get("cpu"), start, end)
    before, during, after = (run["phases"][p] for p in ("before", "during", "after"))
    lat_b, lat_d = before["latency_us"]["all"], during["latency_us"]["all"]
    p99_before, p99_during = _ms(lat_b["p99"], lat_b["count"]), _ms(lat_d["p99"], lat_d["count"])
    checker = load["checker"]
    errs = load["errors_total"]
    mig_run = run["migration"]
    report = new_report(run["config"], argv)
    report["runs"].append(run)
    report.update(
        {
            "migration_id": mig.get("migration_id"),
            "migration_state": mig.get("state"),
            "migrated_slots": mig_run["slots"],
            "keys": mig_run["keys_moved"],
            "duration_s": round(end - start, 3),
            "keys_per_s": mig_run["keys_per_s"],
            "throughput_before_ops": before["ops_per_s"],
            "throughput_during_ops": during["ops_per_s"],
            "throughput_after_ops": after["ops_per_s"],
            "throughput_ratio": _ratio(during["ops_per_s"], before["ops_per_s"], 3),
            "p50_before_ms": _ms(lat_b["p50"], lat_b["count"]),
            "p50_during_ms": _ms(lat_d["p50"], lat_d["count"]),
            "p99_before_ms": p99_before,
            "p99_during_ms": p99_during,
            "p99_ratio": _ratio(p99_during, p99_before, 3),
            "client_errors": errs["retryable"] + errs["non_retryable"],
            "client_errors_by_kind": load["errors"],
            "client_errors_during": sum(during["errors"].values()),
            "client_retries": load.get("client", {}).get("retries"),
            "checker": {
                "lost_writes": checker["lost_writes"],
                "stale_reads": checker["stale_reads"],
                "duplicates": checker["duplicates"] + checker.get("lost_increments", 0),
                "unknown_values": checker.get("unknown_values", 0),
                "operations": checker["operations"],
                "ok": checker["ok"],
            },
            "load": {
                "ops": load["ops"],
                "ops_per_s": load["ops_per_s"],
                "config": load["config"],
            },
            "cpu_budgets": (run["cpu"] or {}).get("budgets"),
            "cpu_saturated": (run["cpu"] or {}).get("saturated"),
            "migration_start_s": round(start - tl["t0_monotonic"], 3),
            "migration_end_s": round(end - tl["t0_monotonic"], 3),
        }
    )
    finish_report(report)
    return report


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The human summary of a :func:`migration_under_load` report."""
    c = r["checker"]
    cpu_run = r["runs"][0].get("cpu") if r.get("runs") else None
    cpu_line = (
        "CPU (before/during % of budget): " + cpu.summary(cpu_run)
        + f"; saturated: {', '.join(cpu_run['saturated']) or 'none'}"
        if cpu_run and cpu_run.get("roles")
        else "CPU: the lab ran without budgets (or the load did not read them)"
    )  # fmt: skip
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
        cpu_line,
    ]
