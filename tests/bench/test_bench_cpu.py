"""The report's CPU section, from fake cgroup readings (no cgroups needed)."""

from __future__ import annotations

from typing import Any

import pytest

from netmigrate.bench import cpu, table

SHARES = {"switch": 0.4, "client": 0.5, "redis1": 0.25, "redis2": 0.25, "controller": 0.3}


def reading(t: float, harness_s: float, usage: dict[str, tuple[float, float, int]]) -> dict:
    """A :func:`netmigrate.lab.cgroups.read_usage`-shaped reading: host -> (usage, throttled, n)."""
    hosts = {
        h: {"host": h, "share": SHARES[h], "quota_us": round(SHARES[h] * 10_000),
            "period_us": 10_000, "usage_s": u, "throttled_s": thr, "nr_throttled": n}
        for h, (u, thr, n) in usage.items()
    }  # fmt: skip
    return cpu.sample({"hosts": hosts, "time": t}, harness_s, t)


def readings() -> dict[str, dict[str, Any]]:
    # 10 s before, 4 s during, 6 s after. redis1 (the source) runs at its quota before the
    # migration, redis2 picks up half of the work afterwards.
    return {
        cpu.START: reading(100.0, 1.0, {"redis1": (5.0, 0.0, 0), "redis2": (1.0, 0.0, 0),
                                       "switch": (2.0, 0.0, 0)}),
        cpu.MIGRATION_STARTED: reading(110.0, 4.0, {"redis1": (7.5, 1.5, 300),
                                                    "redis2": (1.2, 0.0, 0),
                                                    "switch": (4.0, 0.0, 0)}),
        cpu.MIGRATION_FINISHED: reading(114.0, 6.0, {"redis1": (8.5, 2.0, 400),
                                                     "redis2": (2.0, 0.1, 5),
                                                     "switch": (5.0, 0.2, 10)}),
        cpu.END: reading(120.0, 9.0, {"redis1": (9.4, 2.0, 400), "redis2": (2.9, 0.1, 5),
                                      "switch": (7.0, 0.2, 10)}),
    }  # fmt: skip


def test_each_role_against_its_budget_per_phase() -> None:
    budgets = {"period_us": 10_000, "shares": SHARES}
    section = cpu.cpu_section(readings(), budgets)
    assert section["budgets"] == budgets
    assert section["marks"] == ["start", "started", "finished", "end"]
    r1 = section["roles"]["redis1"]
    assert r1["share"] == 0.25
    before, during, after = (r1["phases"][p] for p in ("before", "during", "after"))
    # 2.5 CPU s in 10 s against 0.25 core = 100 % of the budget, throttled 1.5 s.
    assert before == {"wall_s": 10.0, "usage_s": 2.5, "share": 0.25, "used_pct": 100.0,
                      "throttled_s": 1.5, "nr_throttled": 300}  # fmt: skip
    assert during["used_pct"] == 100.0 and during["throttled_s"] == 0.5
    assert after["used_pct"] == pytest.approx(60.0)
    # The switch: 2 s in 10 s against 0.4 core = 50 %.
    assert section["roles"]["switch"]["phases"]["before"]["used_pct"] == 50.0
    # The load generator runs outside every cgroup: against one core.
    harness = section["roles"][cpu.HARNESS]
    assert harness["share"] is None
    assert harness["phases"]["before"]["used_pct"] == 30.0
    assert harness["phases"]["after"]["used_pct"] == 50.0
    assert section["saturated"] == ["redis1 before", "redis1 during"]


def test_harness_inside_a_budgeted_role_is_not_counted_twice() -> None:
    section = cpu.cpu_section(readings(), None, harness_host="client")
    assert cpu.HARNESS not in section["roles"]
    assert section["budgets"] is None and section["harness_in"] == "client"


def test_migration_that_never_started_gives_one_run_phase() -> None:
    r = readings()
    section = cpu.cpu_section({cpu.START: r[cpu.START], cpu.END: r[cpu.END]}, None)
    run = section["roles"]["redis1"]["phases"]
    assert list(run) == ["run"]
    assert run["run"]["usage_s"] == pytest.approx(4.4)
    assert run["run"]["used_pct"] == pytest.approx(88.0)
    assert section["saturated"] == []


def test_a_role_missing_from_the_first_reading_is_left_out() -> None:
    r = readings()
    del r[cpu.START]["hosts"]["redis2"]
    section = cpu.cpu_section(r, None)
    assert "before" not in section["roles"]["redis2"]["phases"]
    assert section["roles"]["redis2"]["phases"]["during"]["usage_s"] == pytest.approx(0.8)


def test_table_shows_budgets_and_saturation() -> None:
    section = cpu.cpu_section(readings(), {"period_us": 10_000, "shares": SHARES})
    run = {"workload": "B", "system": "netmigrate", "cpu": section, "phases": {},
           "migration": {}, "ratios": {}, "totals": {}}  # fmt: skip
    report = {"runs": [run]}
    row = table.row(run)
    assert row["CPU saturated"] == "redis1 before, redis1 during"
    md = table.markdown(report)
    assert "CFS period 10000 us" in md
    assert "| redis1 | 0.25 | before | 10.00 | 2.50 | 100 | 1.50 |" in md
    assert "| harness | - | after | 6.00 | 3.00 | 50 | 0.00 |" in md
    text = table.terminal(report)
    assert "redis1 100/100% of 0.25" in text
    assert table.row({**run, "cpu": None})["CPU saturated"] == "not measured"


def test_demo_report_takes_the_samples_around_the_migration() -> None:
    # `bench load` read the lab every 0.25 s from t=0 to t=5; the migration ran 2.1..3.3 s.
    samples = []
    for i in range(21):
        t = 1000.0 + i * 0.25
        source = 0.25 * min(t - 1000.0, 2.25)  # at its quota until 2.25 s, then idle
        samples.append(
            reading(t, 0.1 * i, {"redis1": (source, 0.0, 0), "switch": (0.1 * i, 0.0, 0)})
        )
    from netmigrate.bench.load.cpu_samples import section

    doc = {"budgets": {"period_us": 10_000, "shares": SHARES}, "harness_in": "client",
           "samples": samples}  # fmt: skip
    out = section(doc, 1002.1, 1003.3)
    assert out is not None
    assert out["marks"] == ["start", "started", "finished", "end"]
    r1 = out["roles"]["redis1"]["phases"]
    assert r1["before"]["wall_s"] == 2.0 and r1["before"]["used_pct"] == 100.0
    assert r1["during"]["wall_s"] == 1.5  # 2.0 .. 3.5: the readings around 2.1 and 3.3
    assert r1["after"]["used_pct"] == 0.0
    assert cpu.HARNESS not in out["roles"]  # the load runs in the client's cgroup
    assert section({"budgets": None, "samples": []}, 1.0, 2.0) is None
    assert section(None, 1.0, 2.0) is None


def test_bench_load_reads_budgets_from_the_run_dir_given(tmp_path: Any) -> None:
    import argparse

    from netmigrate.bench.load import cli as load_cli

    p = argparse.ArgumentParser()
    load_cli.add_arguments(p)
    args = p.parse_args(["--service", "10.0.1.1:50000", "--out", str(tmp_path),
                         "--cpu-run-dir", "/run/netmigrate-lab/nm"])  # fmt: skip
    cfg, _ = load_cli._config(args)
    assert str(cfg.cpu_run_dir) == "/run/netmigrate-lab/nm"
    cfg, _ = load_cli._config(p.parse_args(["--service", "10.0.1.1:50000", "--out", "x"]))
    assert cfg.cpu_run_dir is None
