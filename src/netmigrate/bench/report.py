"""The JSON report of ``netmigrate bench`` and the files written next to it.

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
        "server_counters": {counter: change over the run phase} (Redis Cluster:
                           errorstat_MOVED/ASK/TRYAGAIN/... summed over nodes; both peers:
                           cpu_ms_<server>, connections_<server> accepted),
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
