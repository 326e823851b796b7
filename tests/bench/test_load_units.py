"""The load generator's and the report's pure parts: mix parsing, timeline windows, ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netmigrate.bench.load.workload import OPS, Chooser, WorkloadConfig, parse_mix
from netmigrate.bench.report import (
    ReportError,
    migration_under_load,
    validate_report,
)
from netmigrate.bench.table import rows
from netmigrate.bench.timeline import Recorder, errors_between, merged


def test_parse_mix_normalises_and_rejects_bad_items() -> None:
    assert parse_mix("get=3,set=1") == {"get": 0.75, "set": 0.25}
    for bad in ("get", "get=x", "scan=1", "get=-1", "get=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_chooser_is_seeded_and_keeps_counters_apart() -> None:
    cfg = WorkloadConfig(keys=100, counters=10, key_prefix="p:")
    a, b = Chooser(cfg, 3), Chooser(cfg, 3)
    seq_a = [(a.op(), a.key(), a.counter()) for _ in range(50)]
    assert seq_a == [(b.op(), b.key(), b.counter()) for _ in range(50)]
    assert all(k.startswith(b"p:key:") and c.startswith(b"p:ctr:") for _, k, c in seq_a)


S = 1_000_000_000  # ns


def _timeline() -> dict:
    """The load generator's timeline: a Recorder on CLOCK_MONOTONIC, started at t = 100 s."""
    tl = Recorder(clock=lambda: 100 * S, op_names=OPS)
    # 10 bins of 100 ms: 10 ops of 1 ms each in the first 5, 5 ops of 4 ms in the last 5.
    for b in range(10):
        n, lat = (10, S // 1000) if b < 5 else (5, 4 * S // 1000)
        for _ in range(n):
            end = 100 * S + b * S // 10 + S // 20
            tl.record(OPS.index("get"), end - lat, end)
    tl.error("timeout", 100 * S + 3 * S // 4)
    return tl.timeline(tl.bin_end(100 * S + 99 * S // 100), hdr=True)


def test_merged_window_counts_whole_bins_only() -> None:
    tl = _timeline()
    ops, secs, h = merged(tl, 100.0, 100.5)
    assert (ops, round(secs, 3)) == (50, 0.5)
    assert 990 <= h.get_value_at_percentile(99.0) <= 1010  # 1 ms in µs
    ops, secs, _ = merged(tl, 100.55, 101.0)  # the bin starting at 100.5 is cut: left out
    assert (ops, round(secs, 3)) == (20, 0.4)
    assert errors_between(tl, 100.7, 100.8) == {"timeout": 1}
    assert errors_between(tl, 100.0, 100.7) == {}
    # Every bin up to the last operation's is kept, with exact per-bin percentiles as well.
    assert len(tl["ops"]) == 10 and sum(tl["ops"]) == 75
    assert tl["p99_us"][0] == 1000 and tl["p99_us"][9] == 4000


def _load_doc() -> dict:
    return {
        "clock": {"monotonic": 100.0, "wall": 1_000_000.0},
        "load_start_monotonic": 100.0,
        "load_end_monotonic": 101.0,
        "timeline": _timeline(),
        "errors": {"retryable": {"timeout": 1}, "non_retryable": {}},
        "errors_total": {"retryable": 1, "non_retryable": 0},
        "checker": {"ok": True, "lost_writes": 0, "stale_reads": 0, "duplicates": 0,
                    "lost_increments": 0, "unknown_values": 0, "operations": 75},
        "ops": 75, "ops_per_s": 75.0,
        "config": {"preload": 10, "concurrency": 2, "workload": {"keys": 10, "value_size": 64}},
        "client": {"retries": 3},
    }  # fmt: skip


def test_report_maps_wall_times_onto_the_monotonic_clock() -> None:
    mig = {"started": 1_000_000.5, "finished": 1_000_001.0, "slots_done": 7, "keys_copied": 50}
    r = migration_under_load(_load_doc(), mig)
    assert r["throughput_before_ops"] == 100.0
    assert r["throughput_during_ops"] == 50.0
    assert r["throughput_ratio"] == 0.5
    assert 3.9 <= r["p99_during_ms"] <= 4.1 and 0.99 <= r["p99_before_ms"] <= 1.01
    assert r["client_errors"] == 1 and r["client_errors_during"] == 1
    assert r["keys_per_s"] == 100.0 and r["migrated_slots"] == 7
    assert r["checker"]["ok"] is True


def test_migration_under_load_is_a_bench_report() -> None:
    """One report format: `netmigrate bench compare` reads the demo's report like a YCSB run's."""
    mig = {"started": 1_000_000.5, "finished": 1_000_001.0, "slots_done": 7, "keys_copied": 50}
    r = migration_under_load(_load_doc(), mig, argv=["report"])
    assert validate_report(r) == []
    assert r["command"] == "netmigrate bench report"
    (run,) = r["runs"]
    assert run["phases"]["before"]["ops_per_s"] == r["throughput_before_ops"]
    assert run["ratios"]["throughput_during_before"] == 0.5
    assert run["timeline"]["phase"] == ["before"] * 5 + ["during"] * 5
    assert "hdr" not in run["timeline"]
    (row,) = rows(r)
    assert (row["system"], row["ops/s before"], row["verified"]) == ("netmigrate", "100", "ok")


def test_report_prefers_monotonic_times_and_rejects_nonsense() -> None:
    mig = {"started_monotonic": 100.2, "finished_monotonic": 100.7, "started": 1, "finished": 2}
    assert migration_under_load(_load_doc(), mig)["duration_s"] == 0.5
    with pytest.raises(ReportError):
        migration_under_load(_load_doc(), {"slots_done": 1})
    with pytest.raises(ReportError):
        migration_under_load(_load_doc(), {"started_monotonic": 101.0, "finished_monotonic": 100.0})


def test_report_cli_writes_json_and_png_and_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "load.json").write_text(json.dumps(_load_doc()))
    mig = tmp_path / "mig.json"
    mig.write_text(json.dumps({"started": 1_000_000.5, "finished": 1_000_001.0}))
    cmd = [sys.executable, "-m", "netmigrate.cli", "bench", "report",
           "--load", str(tmp_path / "load"), "--migration", str(mig),
           "--out", str(tmp_path / "rep")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "throughput before 100.0 ops/s" in done.stdout
    assert (tmp_path / "rep" / "migration-under-load.png").stat().st_size > 1000
    mig.write_text("not json")
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
