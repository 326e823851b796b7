"""``netmigrate bench gateway``: redis-benchmark through the gateway against redis-benchmark
straight to Redis on the budgeted lab. The lab run needs root, namespaces and redis-server:
run it under the integration lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netmigrate.bench.micro.gateway import Params, host_use, parse_csv, table

CSV_7_0 = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
    '"p99_latency_ms","max_latency_ms"\n'
    '"SET","50251.26","2.343","0.344","2.263","3.455","4.223","9.871"\n'
)


def test_parse_csv_reads_the_rate_of_each_test() -> None:
    assert parse_csv(CSV_7_0) == {"SET": 50251.26}
    assert parse_csv("") == {}


def test_host_use_is_cpu_over_the_budget_of_the_interval() -> None:
    before = {"share": 0.5, "usage_s": 10.0, "throttled_s": 1.0}
    after = {"share": 0.5, "usage_s": 10.95, "throttled_s": 1.5}
    use = host_use(before, after, wall_s=2.0)
    assert use.used_pct == 95.0
    assert use.saturated
    assert use.throttled_s == 0.5
    idle = host_use(before, {**after, "usage_s": 10.2}, wall_s=2.0)
    assert idle.used_pct == 20.0
    assert not idle.saturated


def test_both_paths_get_the_same_redis_benchmark_options() -> None:
    params = Params(tests=("get",), clients=4, pipeline=8, requests=100, keyspace=10)
    direct = params.argv("get", "10.0.0.3", 6379)
    gateway = params.argv("get", "127.0.0.1", 6379)
    assert direct[3:] == gateway[3:]
    assert direct[direct.index("-P") + 1] == "8"
    assert direct[direct.index("-r") + 1] == "10"
    assert "-r" not in Params(requests=100).argv("get", "h", 1)
    longer = Params(requests=100, direct_requests=1000)
    assert longer.argv("get", "h", 1, direct=True)[longer.argv("get", "h", 1).index("-n") + 1] == (
        "1000"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, cgroups)")
def test_bench_gateway_reports_a_ratio_per_test(tmp_path: Path) -> None:
    assert shutil.which("redis-benchmark"), "redis-benchmark (Debian redis-tools) is required"
    out = tmp_path / "gw.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "netmigrate.cli", "bench", "gateway", "--",
            "-n", "2000", "--direct-requests", "20000", "-t", "get,lpush",
            "--prefix", "nmtgwb", "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert [t["test"] for t in rep["tests"]] == ["get", "lpush"]
    for t in rep["tests"]:
        assert t["direct"]["rps"] > 0 and t["gateway"]["rps"] > 0
        assert t["ratio"] == pytest.approx(t["gateway"]["rps"] / t["direct"]["rps"], abs=1e-3)
        assert not t["direct"]["errors"] and not t["gateway"]["errors"]
        # Budgets are on: every path's run is measured against each host's share.
        assert {"client", "switch", "redis1"} <= set(t["gateway"]["hosts"])
        assert t["gateway"]["processes"]["gateway"] > 0
    assert rep["budgets"]["shares"]["client"] > 0
    assert table(rep).count("\n") == 3
    # The lab is gone afterwards.
    assert not Path("/run/netmigrate-lab/nmtgwb").exists()
