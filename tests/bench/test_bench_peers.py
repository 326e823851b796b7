"""The two peers for real: redis-server processes, redis-cli resharding, MIGRATE copies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from netmigrate.bench.cli import REFERENCE
from netmigrate.bench.kv import CountingEvents, NullEvents
from netmigrate.bench.overhead import measure, mix_rate
from netmigrate.bench.peers.redis_cluster import RedisClusterSystem, initial_layout, resp_map
from netmigrate.bench.peers.stop_and_copy import CGROUP_PREFIX as SC_PREFIX
from netmigrate.bench.peers.stop_and_copy import StopAndCopySystem
from netmigrate.bench.redis_server import start_redis
from netmigrate.bench.runner import RunConfig, run_system
from netmigrate.bench.system import SetupPlan, create_system
from netmigrate.bench.ycsb import key_name
from netmigrate.cli import main
from netmigrate.lab import cgroups
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot

pytestmark = pytest.mark.redis

RECORDS = 2000
HALF = SLOT_COUNT // 2


def keys_in_moved_slots(records: int = RECORDS) -> int:
    return sum(key_slot(key_name(k)) < HALF for k in range(records))


def peer_config(**kw: Any) -> RunConfig:
    base = dict(
        workload="A", records=RECORDS, value_size=64, concurrency=8, duration_s=3.0,
        migrate_at_s=1.0, min_after_s=1.0, migrate_fraction=0.5,
    )  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


def assert_gone(pids: list[int], dirs: list[Path]) -> None:
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    for d in dirs:
        assert not d.exists()


class InspectedRedisCluster(RedisClusterSystem):
    """Records where keys and slots really are just before teardown."""

    facts: dict[str, Any]

    async def teardown(self) -> None:
        self.facts = {"pids": [n.process.pid for n in self.nodes],
                      "dirs": [n.directory for n in self.nodes]}  # fmt: skip
        if self.nodes:
            target = self.nodes[-1].client(decode_responses=True)
            source = self.nodes[0].client(decode_responses=True)
            try:
                self.facts["shards"] = [
                    resp_map(s) for s in await target.execute_command("CLUSTER", "SHARDS")
                ]
                for shard in self.facts["shards"]:
                    shard["nodes"] = [resp_map(n) for n in shard["nodes"]]
                self.facts["target_id"] = await target.execute_command("CLUSTER", "MYID")
                counts_target = counts_source = 0
                for slot in sorted({key_slot(key_name(k)) for k in range(RECORDS)}):
                    if slot < HALF:
                        counts_target += await target.execute_command(
                            "CLUSTER", "COUNTKEYSINSLOT", slot
                        )
                        counts_source += await source.execute_command(
                            "CLUSTER", "COUNTKEYSINSLOT", slot
                        )
                self.facts["moved_keys_on_target"] = counts_target
                self.facts["moved_keys_on_source"] = counts_source
            finally:
                await target.aclose()
                await source.aclose()
        await super().teardown()


async def test_redis_cluster_resharding_under_load() -> None:
    system = InspectedRedisCluster()
    run = await run_system(system, peer_config())
    facts = system.facts
    assert_gone(facts["pids"], facts["dirs"])

    ver = run["verification"]
    assert ver["keys_checked"] == RECORDS
    assert ver["history"]["ok"], ver["history"]["examples"]
    assert ver["lost_writes"] == ver["stale_reads"] == ver["unknown_values"] == 0
    assert ver["slots_ok"] and ver["slots_on_target"] == HALF

    # Slots really moved: the target's own CLUSTER SHARDS names it owner of 0..8191.
    owned = [shard["slots"] for shard in facts["shards"]
             if any(n["id"] == facts["target_id"] for n in shard["nodes"])]  # fmt: skip
    assert owned == [[0, HALF - 1]]
    expected = keys_in_moved_slots()
    assert facts["moved_keys_on_target"] == expected
    assert facts["moved_keys_on_source"] == 0
    assert run["keys_per_node_after"] == {"source": RECORDS - expected, "target": expected}
    mig = run["migration"]
    assert mig["error"] is None and mig["slots_moved"] == HALF
    assert mig["keys_moved"] == expected  # redis-cli's dots, one per migrated key

    # Redirections the client followed, counted by the hook and confirmed by the servers.
    events = run["totals"]["client_events"]
    redirects = events.get("MOVED", 0) + events.get("ASK", 0)
    assert redirects > 0
    assert run["phases"]["before"]["client_events"] == {}
    server = run["server_counters"]
    assert 0 < events.get("MOVED", 0) <= server.get("errorstat_MOVED", 0)
    assert events.get("ASK", 0) <= server.get("errorstat_ASK", 0)


async def test_stop_and_copy_under_load() -> None:
    system = StopAndCopySystem()
    run = await run_system(system, peer_config())
    ver = run["verification"]
    assert ver["ok"], ver
    assert ver["lost_writes"] == 0 and ver["keys_checked"] == RECORDS
    expected = keys_in_moved_slots()
    mig = run["migration"]
    assert mig["keys_moved"] == expected
    details = mig["details"]
    assert details["source_keys_deleted"] == expected
    assert 0 < details["write_pause_s"] <= mig["duration_s"]
    assert run["keys_per_node_after"] == {"source": RECORDS - expected, "target": expected}
    assert run["keys_per_node_before"] == {"source": RECORDS, "target": 0}
    assert run["totals"]["redirections"] == 0
    assert run["totals"]["error_count"] == 0


async def test_stop_and_copy_holds_writes_until_the_switch() -> None:
    system = StopAndCopySystem()
    await system.setup(SetupPlan(10, 32, tuple(range(HALF))))
    try:
        events = CountingEvents()
        client = await system.client(events)
        moving = next(key_name(k) for k in range(100) if key_slot(key_name(k)) < HALF)
        staying = next(key_name(k) for k in range(100) if key_slot(key_name(k)) >= HALF)
        await client.set_many([(moving, b"v0"), (staying, b"s0")])

        class Observer:
            def __init__(self) -> None:
                self.write: asyncio.Task[None] | None = None
                self.write_done_during_copy: bool | None = None
                self.read_during_copy: bytes | None = None
                self.read_task: asyncio.Task[bytes | None] | None = None
                self.other_write: asyncio.Task[None] | None = None

            def started(self) -> None:
                self.write = asyncio.create_task(client.set(moving, b"v1"))
                self.read_task = asyncio.create_task(client.get(moving))
                self.other_write = asyncio.create_task(client.set(staying, b"s1"))

            def progress(self, done: int, total: int, unit: str) -> None:
                if self.write_done_during_copy is None:
                    self.write_done_during_copy = self.write.done()

            def finished(self) -> None:
                pass

        obs = Observer()
        result = await system.migrate(list(range(HALF)), obs)
        await obs.write
        assert obs.write_done_during_copy is False  # held while the keys were copied
        assert await obs.read_task == b"v0"  # reads kept being served by the source
        await obs.other_write  # other slots never wait
        assert events.counts == {"WRITE_HELD": 1}
        source, target = (s.client() for s in system.servers)
        try:
            assert await target.get(moving) == b"v1"  # the held write went to the target
            assert await source.get(moving) is None  # old copy deleted
            assert await source.get(staying) == b"s1"
        finally:
            await source.aclose()
            await target.aclose()
        assert result.keys_moved == 1
        await client.aclose()
    finally:
        await system.teardown()
    assert system.servers == []


async def test_stop_and_copy_failed_copy_releases_writes() -> None:
    system = StopAndCopySystem()
    await system.setup(SetupPlan(10, 32, tuple(range(HALF))))
    try:
        client = await system.client(NullEvents())
        moving = next(key_name(k) for k in range(100) if key_slot(key_name(k)) < HALF)
        system._mover.proc.kill()  # the operator tool dies mid-migration
        await system._mover.proc.wait()

        class Observer:
            def started(self) -> None: ...
            def progress(self, done: int, total: int, unit: str) -> None: ...
            def finished(self) -> None: ...

        with pytest.raises(RuntimeError, match="mover"):
            await system.migrate(list(range(HALF)), Observer())
        await asyncio.wait_for(client.set(moving, b"x"), 2)  # not held forever
        assert (await system.slot_owners())[0] == "source"  # routing unchanged
        await client.aclose()
    finally:
        await system.teardown()


def test_cluster_layout_and_slot_rules() -> None:
    assert initial_layout(2, HALF) == [(0, SLOT_COUNT - 1), None]
    assert initial_layout(3, HALF) == [(0, HALF - 1), (HALF, SLOT_COUNT - 1), None]
    layout = initial_layout(4, 1000)
    assert layout[0] == (0, 5461) and layout[-1] is None
    covered = sum(hi - lo + 1 for r in layout if r for lo, hi in [r])
    assert covered == SLOT_COUNT
    with pytest.raises(ValueError, match="at least 2 masters"):
        initial_layout(1, 10)
    with pytest.raises(ValueError, match="lowest-numbered"):
        RedisClusterSystem().validate_slots([5, 6, 7])


async def test_redis_server_cleanup_and_cpu_accounting() -> None:
    server = await start_redis()
    directory, pid = server.directory, server.process.pid
    try:
        assert directory.is_dir() and server.cpu_seconds() >= 0
    finally:
        server.stop()
    server.stop()  # idempotent
    assert_gone([pid], [directory])


async def test_harness_overhead_probe() -> None:
    cfg = RunConfig(workload="B", records=2000, value_size=64, concurrency=8)
    out = await measure(cfg, seconds=1.0, benchmark_requests=5000)
    harness = out["harness_vs_redis"]["ops_per_s"]
    bench = out["redis_benchmark"]
    assert harness > 0 and out["harness_vs_redis"]["errors"] == 0
    assert bench["get_ops_per_s"] > 0 and bench["set_ops_per_s"] > 0
    assert bench["mix_ops_per_s"] == pytest.approx(
        mix_rate("B", bench["get_ops_per_s"], bench["set_ops_per_s"]), rel=1e-3
    )
    assert out["harness_to_redis_benchmark"] == pytest.approx(
        harness / bench["mix_ops_per_s"], rel=1e-3
    )
    assert out["generator_ops_per_s"] > out["null_client_ops_per_s"] > 0
    assert 0 <= out["server_cpu_pct_harness"] <= 100 * (os.cpu_count() or 1)


def test_mix_rate_weights_time_per_operation() -> None:
    assert mix_rate("C", 1000.0, 10.0) == pytest.approx(1000.0)
    assert mix_rate("A", 1000.0, 500.0) == pytest.approx(1 / (0.5 / 1000 + 0.5 / 500))
    assert mix_rate("F", 1000.0, 1000.0) == pytest.approx(1000 / 1.5)  # RMW = GET + SET


def test_cli_run_writes_report_table_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    rc = main([
        "bench", "run", "--system", "stop-and-copy", "--workload", "C", "--records", "1000",
        "--duration", "1.5", "--concurrency", "4", "--overhead-seconds", "0", "--quiet",
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    assert "stop-and-copy" in capsys.readouterr().out
    assert (out / "report.json").stat().st_size > 1000
    assert (out / "table.md").read_text().count("| C | stop-and-copy |") == 1
    assert (out / "plots" / "C-stop-and-copy.png").exists()
    assert REFERENCE["records"] == 200_000  # the documented reference run


def _processes_in(directory: Path) -> dict[int, Path]:
    """Live processes whose working directory lies under ``directory`` (redis-server runs in
    its data dir), found through /proc so that orphans are found too."""
    out = {}
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cwd = Path(os.readlink(proc_dir / "cwd"))
            state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and cwd.is_relative_to(directory):
            out[int(proc_dir.name)] = cwd
    return out


def _wait_gone(directory: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_in(directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_benchmark_leaves_no_server_behind(sig: signal.Signals, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"  # every temp dir of the run lands here (TMPDIR), so none escapes
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netmigrate.cli", "bench", "run", "--system", "stop-and-copy",
         "--records", "2000", "--duration", "60", "--overhead-seconds", "0", "--no-plots",
         "--out", str(tmp_path / "out")],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "run phase" in line:
                break
        servers = _processes_in(tmp)
        assert len(servers) == 2, servers
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
        assert _wait_gone(tmp), "redis-server outlived the benchmark"
        if sig == signal.SIGTERM:
            assert rc == 143
            assert list(tmp.iterdir()) == []  # data dirs removed too
        else:
            assert rc == -signal.SIGKILL  # no cleanup possible: the kernel stopped the servers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_in(tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        # A SIGKILLed run cannot remove its CPU-budget groups; the next run of the system
        # would (RoleCgroups.up), but none may follow in this test session. The servers'
        # exits (reaped by init) and the kernel's release of their groups take a moment.
        deadline = time.monotonic() + 10
        while not cgroups.remove_if_empty(cgroups.root_group(SC_PREFIX)):
            if not cgroups.detect().exists(cgroups.root_group(SC_PREFIX)):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert not cgroups.detect().exists(cgroups.root_group(SC_PREFIX))


@pytest.mark.parametrize(
    ("name", "options", "steps"),
    [("redis-cluster", {}, 5), ("redis-cluster-tuned", {"cluster_client": "redis-py"}, 0),
     ("redis-cluster-tuned", {"cluster_client": "redis-py", "cluster_reinitialize_steps": 3}, 3),
     ("redis-cluster-tuned", {}, None)],
)  # fmt: skip
async def test_cluster_client_variants(
    name: str, options: dict[str, Any], steps: int | None
) -> None:
    system = create_system(name)
    await system.setup(SetupPlan(10, 32, tuple(range(HALF)), options))
    try:
        client = await system.client(NullEvents())
        try:
            if steps is None:  # the tuned peer's default: the lean client, no redis-py at all
                assert "lean cluster client" in system.info()["client"]
                assert not hasattr(client, "_rc")
            else:  # the redis-py setting that separates the variants (the peer's docstring)
                assert client._rc.reinitialize_steps == steps
            assert system.info()["client_reinitialize_steps"] == steps
            await client.set(b"k", b"v")
            assert await client.get(b"k") == b"v"
        finally:
            await client.aclose()
    finally:
        await system.teardown()


def test_cluster_client_option_is_checked() -> None:
    with pytest.raises(ValueError, match="cluster client"):
        create_system("redis-cluster-tuned").validate_options({"cluster_client": "jedis"})
