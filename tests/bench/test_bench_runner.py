"""Runner, report schema, table and plots, driven against the in-memory test system."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from bench_memsystem import MemorySystem
from matplotlib.image import imread

from netmigrate.bench import plots, table
from netmigrate.bench.report import (
    SCHEMA,
    finish_report,
    load_reports,
    new_report,
    ratios,
    validate_report,
    write_json,
)
from netmigrate.bench.runner import RunConfig, run_system


def small_config(**kw: Any) -> RunConfig:
    base = dict(
        workload="A", records=2000, value_size=40, concurrency=4, duration_s=0.9,
        migrate_at_s=0.3, min_after_s=0.3, bin_ms=50,
    )  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def memory_run() -> dict[str, Any]:
    system = MemorySystem()
    run = asyncio.run(run_system(system, small_config()))
    assert system.torn_down
    return run


@pytest.fixture(scope="module")
def report(memory_run: dict[str, Any]) -> dict[str, Any]:
    rep = new_report({"records": 2000}, argv=["run", "--records", "2000"])
    rep["runs"].append(memory_run)
    other = json.loads(json.dumps(memory_run))
    other["system"] = "other"
    rep["runs"].append(other)
    finish_report(rep)
    return rep


async def test_run_has_three_phases_and_a_verified_migration(memory_run: dict[str, Any]) -> None:
    phases = memory_run["phases"]
    assert list(phases) == ["before", "during", "after"]
    assert all(p["ops"] > 0 for p in phases.values())
    mig = memory_run["migration"]
    assert mig["error"] is None
    assert mig["slots"] == 8192 and mig["slots_moved"] == 8192
    assert 0.3 <= mig["start_s"] < mig["end_s"]
    assert mig["keys_moved"] == memory_run["keys_per_node_after"]["target"]
    assert phases["during"]["start_s"] == pytest.approx(mig["start_s"], abs=1e-3)
    ver = memory_run["verification"]
    assert ver["ok"], ver
    assert ver["keys_checked"] == 2000
    assert ver["history"]["operations"] > 0 and ver["history"]["keys"] == 2000
    assert ver["lost_writes"] == ver["stale_reads"] == ver["unknown_values"] == 0
    assert ver["slots_on_target"] == 8192 and ver["slots_ok"]
    # The system reports MOVED for moved slots after the switch; the recorder counts them.
    assert memory_run["totals"]["redirections"] > 0
    assert phases["after"]["client_events"].get("MOVED", 0) > 0
    assert phases["before"]["client_events"] == {}
    tl = memory_run["timeline"]
    assert tl["bin_ms"] == 50
    assert sum(tl["ops"]) <= memory_run["totals"]["ops"]
    assert tl["migration_progress"][-1][1] == tl["migration_progress"][-1][2]
    assert memory_run["run_s"] >= 0.9


async def test_checker_catches_writes_lost_by_a_broken_migration() -> None:
    run = await run_system(
        MemorySystem(lose_writes=True, step_s=0.02, steps=20),
        # The run ends when the migration does, before new writes can hide the loss.
        small_config(records=2000, concurrency=8, duration_s=0.5, min_after_s=0.0),
    )
    ver = run["verification"]
    assert not ver["ok"]
    assert ver["lost_writes"] > 0
    # The examples name what the lost writes left behind: old values read or kept.
    details = [e["detail"] for e in ver["history"]["examples"]]
    assert details and all(
        "hides the acknowledged set" in d or "a later write was acknowledged" in d for d in details
    ), details


async def test_errors_are_counted_by_kind_and_pacing_caps_the_rate() -> None:
    system = MemorySystem()
    system.fail_writes = True
    run = await run_system(system, small_config(rate=500.0, workload="B"))
    errors = run["totals"]["errors"]
    assert set(errors) == {"ConnectionError"} and errors["ConnectionError"] > 0
    # Paced: never more than the target rate (plus the bins' rounding).
    total = run["totals"]["ops"] + run["totals"]["error_count"]
    assert 0 < total <= 500 * run["run_s"] * 1.05 + 4
    # Failed writes have an unknown outcome: not held against the system.
    assert run["verification"]["ok"]


def test_config_validation_names_every_problem() -> None:
    with pytest.raises(ValueError) as e:
        RunConfig(records=1, concurrency=0, migrate_fraction=1.5, value_size=3).validate()
    msg = str(e.value)
    for part in ("records", "concurrency", "migrate fraction", "value size"):
        assert part in msg
    with pytest.raises(ValueError, match="within the run"):
        RunConfig(duration_s=5, migrate_at_s=6).validate()
    with pytest.raises(ValueError, match="unknown workload"):
        RunConfig(workload="E").validate()
    assert len(RunConfig(migrate_fraction=0.25).slots()) == 4096


def test_ratios() -> None:
    def phase(ops_s: float, p50: int, p99: int) -> dict[str, Any]:
        return {"ops_per_s": ops_s, "latency_us": {"all": {"p50": p50, "p99": p99, "p999": p99}}}

    r = ratios({"before": phase(1000, 100, 400), "during": phase(500, 200, 4000)})
    assert r["throughput_during_before"] == 0.5
    assert r["p50_during_before"] == 2.0
    assert r["p99_during_before"] == 10.0
    assert "throughput_after_before" not in r


def test_report_schema_roundtrip(report: dict[str, Any], tmp_path: Path) -> None:
    assert report["schema"] == SCHEMA
    assert validate_report(report) == []
    assert report["machine"]["cpu_count"] >= 1
    assert report["command"] == "netmigrate bench run --records 2000"
    write_json(report, tmp_path / "r" / "report.json")
    loaded = load_reports([tmp_path / "r"])
    assert loaded["runs"][0]["phases"] == report["runs"][0]["phases"]
    merged = load_reports([tmp_path / "r", tmp_path / "r" / "report.json"])
    assert len(merged["runs"]) == 4


def test_invalid_reports_are_rejected_with_the_reason(
    report: dict[str, Any], tmp_path: Path
) -> None:
    broken = json.loads(json.dumps(report))
    del broken["runs"][0]["phases"]["before"]["latency_us"]["all"]["p99"]
    broken["runs"][1]["timeline"]["ops"].pop()
    problems = validate_report(broken)
    assert any("latency_us.all: missing 'p99'" in p for p in problems)
    assert any("timeline.ops: length differs" in p for p in problems)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read report"):
        load_reports([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(ValueError, match="not a bench report"):
        load_reports([tmp_path / "other.json"])


def test_markdown_table_has_one_row_per_run(report: dict[str, Any]) -> None:
    md = table.markdown(report)
    main, _, rest = md.partition("\n\n")
    lines = [line for line in main.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(report["runs"])
    # The in-memory system has no budgets: the CPU tables show the load generator alone.
    assert "| harness | - | before |" in rest
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == list(table.COLUMNS)
    cells = {len(line.strip("|").split("|")) for line in lines}
    assert cells == {len(table.COLUMNS)}
    run = report["runs"][0]
    row = table.row(run)
    assert row["verified"] == "ok"
    expected_ratio = f"{run['ratios']['throughput_during_before']:.2f}"
    assert row["thr during/before"] == expected_ratio
    assert row["migration s"] == f"{run['migration']['duration_s']:.2f}"
    assert row["redirections"].startswith(f"{run['totals']['redirections']:,} (MOVED")


def test_table_shows_failures_and_overhead(report: dict[str, Any]) -> None:
    rep = json.loads(json.dumps(report))
    rep["runs"][0]["verification"]["ok"] = False
    rep["runs"][0]["verification"]["lost_writes"] = 3
    rep["runs"][1]["migration"]["error"] = "boom"
    rep["harness_overhead"] = {
        "concurrency": 4, "workload": "A", "harness_vs_redis": {"ops_per_s": 1000.0},
        "redis_benchmark": {"mix_ops_per_s": 4000.0}, "harness_to_redis_benchmark": 0.25,
        "server_cpu_pct_harness": 12.5, "generator_ops_per_s": 1e5,
        "null_client_ops_per_s": 5e4,
    }  # fmt: skip
    md = table.markdown(rep)
    assert "FAIL (lost 3" in md
    assert "(migration failed)" in md
    assert "harness/redis-benchmark 0.25" in md
    term = table.terminal(rep)
    assert term.splitlines()[0].startswith("workload")
    assert all(len(line) <= 200 for line in term.splitlines()[: len(table.COLUMNS)])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plots_are_written_and_not_blank(report: dict[str, Any], tmp_path: Path) -> None:
    written = plots.plot_report(report, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["A-compare.png", "A-memory.png", "A-other.png"]
    for p in written:
        assert png_size(p) == (900, 550)
        assert 10_000 < p.stat().st_size < 400_000
        pixels = imread(p)
        # Lines and shading, not an empty canvas: many distinct colours.
        assert len({tuple(px) for px in pixels.reshape(-1, pixels.shape[-1])[::37]}) > 20
    with pytest.raises(ValueError, match="nothing to compare"):
        plots.plot_compare([], tmp_path / "x.png")


def test_sweep_runs_of_one_system_get_one_figure_each(
    report: dict[str, Any], tmp_path: Path
) -> None:
    import copy

    from netmigrate.bench.sweep import RATE, Point

    swept = copy.deepcopy(report)
    first = swept["runs"][0]
    swept["runs"] = []
    for value in (0, 2000):
        run = copy.deepcopy(first)
        run["sweep"] = Point(run["system"], RATE, value).to_dict()
        swept["runs"].append(run)
    names = sorted(p.name for p in plots.plot_report(swept, tmp_path))
    assert names == ["A-compare.png", "A-memory-rate-2-000-s.png", "A-memory-rate-unlimited.png"]
