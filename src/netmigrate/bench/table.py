"""The side-by-side table of a report, as markdown and as aligned terminal text."""

from __future__ import annotations

from typing import Any

from netmigrate.bench import cpu
from netmigrate.bench.kv import REDIRECT_KINDS

COLUMNS = (
    "workload",
    "system",
    "ops/s before",
    "ops/s during",
    "thr during/before",
    "p50 before ms",
    "p50 during ms",
    "p99 before ms",
    "p99 during ms",
    "p99 during/before",
    "client errors",
    "redirections",
    "held writes",
    "migration s",
    "keys moved",
    "keys/s",
    "longest stall ms",
    "bins < median/2",
    "verified",
    "CPU saturated",
)
_NUMERIC = frozenset(COLUMNS) - {"workload", "system", "verified", "CPU saturated"}


def _ms(us: float | int | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _int(x: float | int | None) -> str:
    return "-" if x is None else f"{round(x):,}"


def _errors(totals: dict[str, Any]) -> str:
    n = totals.get("error_count", 0)
    if not n:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in totals["errors"].items())
    return f"{n:,} ({kinds})"


def _redirections(totals: dict[str, Any]) -> str:
    events = totals.get("client_events", {})
    parts = [f"{k} {events[k]:,}" for k in sorted(events) if k in REDIRECT_KINDS]
    n = totals.get("redirections", 0)
    return f"{n:,} ({', '.join(parts)})" if parts else "0"


def row(run: dict[str, Any]) -> dict[str, str]:
    phases = run.get("phases", {})
    before, during = phases.get("before"), phases.get("during")
    mig = run.get("migration", {})
    ratios = run.get("ratios", {})
    totals = run.get("totals", {})
    ver = run.get("verification")
    if ver is None:
        verified = "not run"
    elif ver.get("ok"):
        verified = "ok"
    else:
        verified = (
            f"FAIL (lost {ver.get('lost_writes', 0)}, stale reads {ver.get('stale_reads', 0)}, "
            f"unknown values {ver.get('unknown_values', 0)}, slots ok {ver.get('slots_ok')})"
        )
    duration = mig.get("duration_s")
    return {
        "workload": run["workload"],
        "system": run["system"]
        + (f", {run['sweep']['label']}" if run.get("sweep") else "")
        + (" (migration failed)" if mig.get("error") else ""),
        "ops/s before": _int(before and before["ops_per_s"]),
        "ops/s during": _int(during and during["ops_per_s"]),
        "thr during/before": _ratio(ratios.get("throughput_during_before")),
        "p50 before ms": _ms(before and before["latency_us"]["all"]["p50"]),
        "p50 during ms": _ms(during and during["latency_us"]["all"]["p50"]),
        "p99 before ms": _ms(before and before["latency_us"]["all"]["p99"]),
        "p99 during ms": _ms(during and during["latency_us"]["all"]["p99"]),
        "p99 during/before": _ratio(ratios.get("p99_during_before")),
        "client errors": _errors(totals),
        "redirections": _redirections(totals),
        "held writes": _int(totals.get("client_events", {}).get("WRITE_HELD", 0)),
        "migration s": "-" if duration is None else f"{duration:.2f}",
        "keys moved": _int(mig.get("keys_moved")),
        "keys/s": _int(mig.get("keys_per_s")),
        "longest stall ms": _stall(run.get("stalls")),
        "bins < median/2": "-" if not run.get("stalls") else _int(run["stalls"]["low_bins"]),
        "verified": verified,
        "CPU saturated": _saturated(run.get("cpu")),
    }


def _stall(st: dict[str, Any] | None) -> str:
    if not st:
        return "-"
    gap = st.get("longest_gap_ms")
    return f"< {st['gap_threshold_ms']:g}" if gap is None else f"{gap:.1f}"


def _saturated(section: dict[str, Any] | None) -> str:
    if not section or not section.get("roles"):
        return "not measured"
    return ", ".join(section["saturated"]) or "none"


def cpu_markdown(report: dict[str, Any]) -> str:
    """Per run, role and phase: CPU seconds, % of the budget used, throttled seconds."""
    lines = []
    for run in sorted(report["runs"], key=lambda r: (r["workload"], r["system"])):
        section = run.get("cpu")
        if not section or not section.get("roles"):
            continue
        budgets = section.get("budgets")
        period = f", CFS period {budgets['period_us']} us" if budgets else ", no budgets"
        lines += [
            "",
            f"CPU of {run['workload']} {run['system']}{period} (used % of the role's budget;"
            " of one core without one):",
            "",
            "| role | budget (cores) | phase | wall s | CPU s | used % | throttled s |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for role, r in sorted(section["roles"].items()):
            share = "-" if r["share"] is None else f"{r['share']:g}"
            for phase, u in r["phases"].items():
                pct = "-" if u["used_pct"] is None else f"{u['used_pct']:.0f}"
                lines.append(
                    f"| {role} | {share} | {phase} | {u['wall_s']:.2f} | {u['usage_s']:.2f} "
                    f"| {pct} | {u['throttled_s']:.2f} |"
                )
    return "\n".join(lines)


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    runs = sorted(report["runs"], key=lambda r: (r["workload"], r["system"]))
    return [row(r) for r in runs]


def markdown(report: dict[str, Any]) -> str:
    data = rows(report)
    head = "| " + " | ".join(COLUMNS) + " |"
    align = "| " + " | ".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + " |"
    body = ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in data]
    lines = [head, align, *body]
    cpu_table = cpu_markdown(report)
    if cpu_table:
        lines.append(cpu_table)
    overhead = overhead_line(report)
    if overhead:
        lines += ["", overhead]
    return "\n".join(lines) + "\n"


def terminal(report: dict[str, Any]) -> str:
    """The same table as aligned columns, transposed (one column per run) to fit 100 chars."""
    data = rows(report)
    if not data:
        return "(no runs)\n"
    label_w = max(len(c) for c in COLUMNS)
    widths = [max(len(r[c]) for c in COLUMNS) for r in data]
    out = []
    for c in COLUMNS:
        cells = [
            r[c].rjust(w) if c in _NUMERIC else r[c].ljust(w)
            for r, w in zip(data, widths, strict=True)
        ]
        out.append(c.ljust(label_w) + "  " + "  ".join(cells))
    for run in sorted(report["runs"], key=lambda r: (r["workload"], r["system"])):
        if run.get("cpu", {}).get("roles"):
            out.append(f"CPU {run['workload']} {run['system']} (before/during % of budget): "
                       + cpu.summary(run["cpu"]))  # fmt: skip
    overhead = overhead_line(report)
    if overhead:
        out += ["", overhead]
    return "\n".join(out) + "\n"


def overhead_line(report: dict[str, Any]) -> str:
    ho = report.get("harness_overhead")
    if not ho:
        return ""
    harness = ho.get("harness_vs_redis", {})
    bench = ho.get("redis_benchmark", {})
    parts = [
        f"Harness overhead (concurrency {ho.get('concurrency')}, one redis-server, workload "
        f"{ho.get('workload')}): harness {_int(harness.get('ops_per_s'))} ops/s",
        f"redis-benchmark {_int(bench.get('mix_ops_per_s'))} ops/s for the same mix",
        f"harness/redis-benchmark {_ratio(ho.get('harness_to_redis_benchmark'))}",
        f"redis-server CPU while the harness ran {ho.get('server_cpu_pct_harness', '-')}%",
        f"generator alone {_int(ho.get('generator_ops_per_s'))} ops/s",
        f"harness with a no-op client {_int(ho.get('null_client_ops_per_s'))} ops/s.",
    ]
    return "; ".join(parts)
