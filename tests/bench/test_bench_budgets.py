"""Every peer's processes sit in their role's CPU-budget cgroup (root, real cgroups)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from support import fork_hooks

from netmigrate.bench import roles
from netmigrate.bench.peers.redis_cluster import CGROUP_PREFIX as RC_PREFIX
from netmigrate.bench.peers.redis_cluster import RedisClusterSystem
from netmigrate.bench.peers.stop_and_copy import CGROUP_PREFIX as SC_PREFIX
from netmigrate.bench.peers.stop_and_copy import StopAndCopySystem
from netmigrate.bench.redis_server import start_redis
from netmigrate.bench.system import SetupPlan
from netmigrate.lab import cgroups
from netmigrate.protocol.constants import SLOT_COUNT

pytestmark = pytest.mark.redis
HALF = SLOT_COUNT // 2


def cgroup_of(pid: int) -> str:
    group = cgroups.detect().group_of(pid)
    assert group is not None
    return group


def test_parse_names_the_lab_roles_and_refuses_bad_specs() -> None:
    budgets = roles.parse("redis1=0.3", 2)
    assert budgets is not None
    assert budgets.shares["redis1"] == 0.3 and budgets.shares["redis2"] == 0.25
    assert budgets.shares["client"] == 0.5 and budgets.shares["controller"] == 0.3
    assert roles.parse("off", 2) is None
    with pytest.raises(ValueError, match="unknown host 'redis3'"):
        roles.parse("redis3=0.2", 2)


def test_stop_and_copy_servers_and_mover_run_in_their_role_cgroups() -> None:
    async def go() -> None:
        system = StopAndCopySystem()
        await system.setup(SetupPlan(10, 32, tuple(range(HALF)), {"cpu": "redis1=0.2"}))
        try:
            source, target = system.servers
            assert cgroup_of(source.process.pid).endswith(f"nm-lab-{SC_PREFIX}/redis1")
            assert cgroup_of(target.process.pid).endswith(f"nm-lab-{SC_PREFIX}/redis2")
            mover = system._mover
            assert mover is not None
            assert cgroup_of(mover.proc.pid).endswith(f"nm-lab-{SC_PREFIX}/controller")
            # The harness (load generator) stays outside: measured, not bounded.
            assert f"nm-lab-{SC_PREFIX}" not in cgroup_of(os.getpid())
            budgets = system.cpu_budgets()
            assert budgets is not None and budgets["shares"]["redis1"] == 0.2
            usage = system.cpu_usage()
            assert usage is not None
            assert usage["hosts"]["redis1"]["quota_us"] == round(0.2 * budgets["period_us"])
            assert usage["hosts"]["controller"]["usage_s"] > 0  # the mover's start-up
        finally:
            await system.teardown()
        assert system.cpu_usage() is None
        assert not cgroups.detect().exists(f"nm-lab-{SC_PREFIX}")

    asyncio.run(go())


def test_redis_cluster_nodes_run_in_their_role_cgroups_and_off_means_none() -> None:
    async def go() -> None:
        system = RedisClusterSystem()
        await system.setup(SetupPlan(10, 32, tuple(range(HALF)), {"masters": 2}))
        try:
            for i, node in enumerate(system.nodes):
                assert cgroup_of(node.process.pid).endswith(f"nm-lab-{RC_PREFIX}/redis{i + 1}")
        finally:
            await system.teardown()
        plain = RedisClusterSystem()
        await plain.setup(SetupPlan(10, 32, tuple(range(HALF)), {"masters": 2, "cpu": "off"}))
        try:
            assert plain.cpu_budgets() is None and plain.cpu_usage() is None
            assert "nm-lab-" not in cgroup_of(plain.nodes[0].process.pid)
        finally:
            await plain.teardown()

    asyncio.run(go())


def test_netmigrate_lab_gets_the_same_role_budgets_by_default() -> None:
    from netmigrate.bench.peers.netmigrate import NetMigrateSystem

    system = NetMigrateSystem()
    nm = system._budgets({})
    peer = roles.parse(None, 2)
    assert nm is not None and peer is not None
    assert dict(nm.shares) == dict(peer.shares)
    assert system._budgets({"cpu": "off"}) is None
    with pytest.raises(ValueError, match="unknown host"):
        system.validate_options({"cpu": "redis9=0.1"})


def test_cgroups_that_cannot_be_made_name_the_way_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Refusing:
        name = "v1"

        def exists(self, group: str) -> bool:
            return False

        def procs_files(self, group: str) -> list[Path]:
            return [tmp_path / "none" / group / "cgroup.procs"]

        def create(self, group: str, quota_us: int, period_us: int) -> None:
            raise cgroups.LabError(f"cannot write to {group}: Permission denied")

    monkeypatch.setattr(cgroups, "detect", lambda *a: Refusing())
    monkeypatch.setattr(cgroups, "_backend_paths", lambda b: {})
    monkeypatch.setattr(roles.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    budgets = roles.parse(None, 2)
    assert budgets is not None
    cg = roles.RoleCgroups("nmbtest", budgets)
    with pytest.raises(RuntimeError, match=r"Permission denied.*`--cpu off`"):
        cg.up()
    assert not (tmp_path / "run").exists()  # the run directory is removed again
    assert cg.usage() is None


def test_up_sweeps_the_empty_groups_a_killed_run_left_and_no_busy_one(tmp_path: Path) -> None:
    """A run killed by SIGKILL leaves its groups (empty: the kernel ended its processes); the
    next run of the prefix removes them first. A group with a process in it is not touched."""
    prefix = "nmbswp"
    root = cgroups.root_group(prefix)
    kernel = cgroups.detect()
    three, two = roles.parse(None, 3), roles.parse(None, 2)
    assert three is not None and two is not None
    killed = tmp_path / "killed"
    killed.mkdir()
    cgroups.apply(prefix, three, {}, killed)  # the killed run had a third server
    (killed / cgroups.CPU_FILE).unlink()  # and its run directory went with it
    assert kernel.exists(f"{root}/redis3")
    cg = roles.RoleCgroups(prefix, two)
    cg.up()
    try:
        assert not kernel.exists(f"{root}/redis3")  # swept: not left for this run's down
        assert kernel.exists(f"{root}/redis2")
    finally:
        cg.down()
    assert not kernel.exists(root)

    live = tmp_path / "live"
    live.mkdir()
    state, _ = cgroups.apply(prefix, three, {}, live)
    sleeper = subprocess.Popen(cgroups.join_argv(state, "redis3", ["sleep", "60"]))
    try:
        deadline = time.monotonic() + 5
        while sleeper.pid not in cgroups.members(state, "redis3"):
            assert time.monotonic() < deadline, "the sleeper never joined its group"
            time.sleep(0.01)
        assert not cgroups.remove_if_empty(root)
        assert kernel.exists(f"{root}/redis3") and kernel.exists(f"{root}/client")
        assert sleeper.pid in cgroups.members(state, "redis3")  # not moved out
    finally:
        sleeper.kill()
        sleeper.wait()
        cgroups.remove(live)
    assert not kernel.exists(root)


def test_bench_load_sampler_reads_real_cgroups() -> None:
    from netmigrate.bench.load.cpu_samples import CpuSampler

    budgets = roles.parse(None, 2)
    assert budgets is not None
    cg = roles.RoleCgroups("nmbsamp", budgets)
    cg.up()
    try:
        assert cg._run_dir is not None
        sampler = CpuSampler(cg._run_dir)
        assert sampler.budgets == budgets.to_dict()
        assert sampler.harness_in is None  # this process is in none of them
        sampler.take()
        sampler.take()
        assert len(sampler.samples) == 2
        assert sampler.samples[0]["hosts"]["redis1"]["share"] == 0.25
        assert sampler.samples[1]["time"] >= sampler.samples[0]["time"]
    finally:
        cg.down()
    assert not cgroups.detect().exists("nm-lab-nmbsamp")


def test_a_budgeted_redis_starts_in_its_role_and_runs_no_python_before_exec() -> None:
    """The harness is threaded (gRPC): its children must not run Python before exec (see
    ``tests/support/fork_hooks``). A redis-server of a budgeted role starts anyway, inside the
    role's cgroup, and still dies with the harness (``setpriv --pdeathsig``)."""
    with fork_hooks.armed():
        plain = asyncio.run(start_redis(name="plain"))
    plain.stop()
    budgets = roles.parse(None, 2)
    assert budgets is not None
    cg = roles.RoleCgroups("nmbwrap", budgets)
    cg.up()
    try:
        with fork_hooks.armed():
            server = asyncio.run(start_redis(name="wrapped", wrap=cg.wrapper("redis1")))
        try:
            assert server.process.pid in cg.members("redis1")
            argv0 = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")[0]
            assert b"redis-server" in argv0  # the wrappers exec'd: same pid, now the server
        finally:
            server.stop()
    finally:
        cg.down()
    assert not cgroups.detect().exists("nm-lab-nmbwrap")


def test_load_generator_processes_run_in_the_client_budget_and_their_runs_merge() -> None:
    from netmigrate.bench.peers.redis_cluster import TunedRedisClusterSystem
    from netmigrate.bench.runner import RunConfig, run_system

    cfg = RunConfig(
        workload="A", records=2000, value_size=64, concurrency=4, duration_s=4.0,
        migrate_at_s=1.0, min_after_s=0.5, migrate_fraction=0.05, client_processes=2,
        options={"masters": 2, "reshard_pipeline": 50},
    )  # fmt: skip
    out = asyncio.run(run_system(TunedRedisClusterSystem(), cfg))
    gen = out["load_generator"]
    assert gen["processes"] == 2 and gen["workers"] == [2, 2] and gen["role"] == "client"
    assert not gen["problems"]
    assert out["verification"]["ok"], out["verification"]
    # Both processes' operations reached the merged recorder and history (the checker saw
    # every write: none of them is reported as a value nobody wrote).
    assert out["totals"]["ops"] > 0 and out["verification"]["unknown_values"] == 0
    client = out["cpu"]["roles"]["client"]
    used = sum(p["usage_s"] for p in client["phases"].values())
    assert client["share"] == cgroups.DEFAULT_CLIENT and used > 0.1
