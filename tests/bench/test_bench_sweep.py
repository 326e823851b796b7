"""The sweep's comparison at equal migration speed, its table and its plot (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from netmigrate.bench import sweep


def _run(workload: str, system: str, knob: str, value: int, duration: float, ratio: float,
         offered: float | None = None) -> dict[str, Any]:  # fmt: skip
    point = sweep.Point(system, knob, value, offered)
    return {
        "workload": workload, "system": system, "sweep": point.to_dict(),
        "migration": {"duration_s": duration, "keys_per_s": 1000.0},
        "ratios": {"throughput_during_before": ratio, "p99_during_before": 1.2},
        "stalls": {"longest_gap_ms": 7.5, "low_bins": 0},
        "totals": {"error_count": 0}, "verification": {"ok": True},
        "phases": {"before": {"ops_per_s": 5000.0}},
    }  # fmt: skip


NM, RC = sweep.NETMIGRATE, sweep.CLUSTER


def test_systems_are_compared_only_where_both_reach_the_duration() -> None:
    runs = [
        _run("B", NM, sweep.RATE, 0, 4.0, 0.90),
        _run("B", NM, sweep.RATE, 2000, 40.0, 0.98),
        _run("B", RC, sweep.PIPELINE, 10, 10.0, 0.70),  # NM's curve there: 0.9 + 0.08 * 6/36
        _run("B", RC, sweep.PIPELINE, 1000, 1.0, 0.50),  # faster than NM ever is: not compared
        _run("B", NM, sweep.RATE, 0, 5.0, 0.10, offered=3500.0),  # open loop: not on the curve
    ]
    cmp = sweep.comparison(runs)["B"]
    assert [s["duration_s"] for s in cmp["shared_durations"]] == [4.0, 10.0]
    at10 = cmp["shared_durations"][1]
    assert at10["cluster"] == 0.70 and abs(at10["netmigrate"] - (0.90 + 0.08 * 6 / 36)) < 1e-3
    assert cmp["netmigrate_higher_everywhere"] is True
    runs.append(_run("B", RC, sweep.PIPELINE, 100, 20.0, 0.99))
    assert sweep.comparison(runs)["B"]["netmigrate_higher_everywhere"] is False


def test_capacity_is_the_before_throughput_and_labels_name_the_setting() -> None:
    run = _run("A", NM, sweep.RATE, 0, 3.0, 0.9)
    assert sweep.capacity(run) == 5000.0
    assert sweep.Point(NM, sweep.RATE, 4000).label == "rate 4,000/s"
    assert sweep.Point(RC, sweep.PIPELINE, 10, 700.0).label == "pipeline 10, open loop 700 ops/s"


def test_table_and_plot(tmp_path: Path) -> None:
    runs = [
        _run(w, s, k, v, d, r)
        for w in ("A", "B")
        for s, k, v, d, r in ((NM, sweep.RATE, 0, 3.0, 0.9), (NM, sweep.RATE, 1000, 30.0, 0.97),
                              (RC, sweep.PIPELINE, 10, 8.0, 0.6))
    ]  # fmt: skip
    text = sweep.markdown(runs)
    assert text.count("\n") == 2 + len(runs) and "| B | netmigrate | rate 1,000/s | 30.00 |" in text
    path = sweep.plot(runs, tmp_path / "sweep.png")
    with Image.open(path) as img:
        assert img.size[0] > 500 and len(img.convert("RGB").getcolors(1 << 16) or []) > 3


def test_closed_points_interleave_the_systems_reference_settings_first() -> None:
    points = sweep.closed_points([0, 2000, 500], [10], RC)
    assert [(p.system, p.value) for p in points] == [(NM, 0), (RC, 10), (NM, 2000), (NM, 500)]
