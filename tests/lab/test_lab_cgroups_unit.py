"""CPU budgets without root: ``--cpu`` parsing, backend detection, and the cgroup v1 / v2 file
protocols against temporary directory trees (this machine has no v2 cpu controller)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netmigrate.lab import cgroups as cg
from netmigrate.lab.errors import LabError
from netmigrate.lab.topology import DEFAULT_HOSTS, lab_ports

HOSTS = list(DEFAULT_HOSTS)


def test_defaults_follow_design_section_8():
    b = cg.parse_cpu(None, HOSTS, cores=2)
    assert b is not None
    assert dict(b.shares) == {
        "switch": 0.4,
        "client": 0.5,
        "redis1": 0.25,
        "redis2": 0.25,
        "redis3": 0.25,
        "controller": 0.3,
    }
    # Servers get the smallest share; everything fits in the cores.
    assert min(b.shares.values()) == b.shares["redis1"]
    assert b.total <= 2
    assert b.period_us == cg.DEFAULT_PERIOD_US
    assert all(b.quota_us(h) >= cg.MIN_QUOTA_US for h in b.shares)


def test_defaults_scale_down_on_a_small_machine():
    b = cg.default_budgets(HOSTS, cores=1)
    assert b.total <= 1
    assert b.shares["redis1"] < b.shares["client"]


def test_off_and_overrides():
    assert cg.parse_cpu("off", HOSTS, cores=2) is None
    b = cg.parse_cpu("redis1=0.3, controller=0.2", HOSTS, cores=2, period_us=20_000)
    assert b is not None
    assert b.shares["redis1"] == 0.3 and b.shares["controller"] == 0.2
    assert b.shares["redis2"] == 0.25  # the defaults stay for hosts not named
    assert b.quota_us("redis1") == 6000 and b.period_us == 20_000


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("redis1", "is not HOST=FRACTION"),
        ("=0.2", "is not HOST=FRACTION"),
        ("nosuch=0.2", "unknown host 'nosuch'"),
        ("redis1=abc", "is not a number"),
        ("redis1=-1", "must be a positive share"),
        ("redis1=0", "must be a positive share"),
        ("redis1=nan", "must be a positive share"),
        ("redis1=0.2,redis1=0.3", "given twice"),
        ("redis1=0.05", "minimum is 1000 us"),
        ("redis1=3", "more than the 2 cores"),
        ("client=1.5", "sum to 2.95 cores"),
    ],
)
def test_parse_errors_are_clear(spec: str, message: str):
    with pytest.raises(LabError, match=message):
        cg.parse_cpu(spec, HOSTS, cores=2)


def test_reserved_host_names_with_budgets():
    with pytest.raises(LabError, match="may not be named 'switch'"):
        cg.parse_cpu(None, ["client", "switch"], cores=2)
    assert cg.parse_cpu("off", ["client", "switch"], cores=2) is None


def test_period_bounds():
    with pytest.raises(LabError, match="period 500 us out of range"):
        cg.parse_cpu(None, HOSTS, cores=2, period_us=500)


MOUNTINFO_V1 = """\
25 21 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V1_COMBINED = """\
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
"""


def test_detect_v1_separate_and_combined():
    b = cg.detect(MOUNTINFO_V1)
    assert isinstance(b, cg.CgroupV1)
    assert (b.cpu_root, b.cpuacct_root) == (
        Path("/sys/fs/cgroup/cpu"),
        Path("/sys/fs/cgroup/cpuacct"),
    )
    b = cg.detect(MOUNTINFO_V1_COMBINED)
    assert isinstance(b, cg.CgroupV1)
    assert b.cpu_root == b.cpuacct_root == Path("/sys/fs/cgroup/cpu,cpuacct")
    # One hierarchy: a pid is written once.
    assert len(b.procs_files("g")) == 1


def _v2_tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("memory\n")
    (root / "cgroup.procs").write_text("")
    return root


def test_detect_v2_needs_the_cpu_controller(tmp_path: Path):
    root = _v2_tree(tmp_path)
    info = f"30 1 0:26 / {root} rw - cgroup2 cgroup2 rw\n"
    b = cg.detect(info)
    assert isinstance(b, cg.CgroupV2) and b.root == root
    (root / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(LabError, match="--cpu off"):
        cg.detect(info)


class _FakeV2(cg.CgroupV2):
    """cgroupfs makes a group's files when the directory is made; a temp tree does not."""

    def create(self, group: str, quota_us: int, period_us: int) -> None:
        path = self.root / group
        path.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == self.root.parent:
                break
            ctl = parent / "cgroup.subtree_control"
            if not ctl.exists():
                ctl.write_text("")
        for name in ("cgroup.procs", "cpu.stat"):
            if not (path / name).exists():
                (path / name).write_text("")
        super().create(group, quota_us, period_us)


def test_v2_apply_join_and_usage(tmp_path: Path):
    root = _v2_tree(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    kernel = _FakeV2(root)
    budgets = cg.parse_cpu("redis1=0.3", ["client", "redis1"], cores=2)
    assert budgets is not None
    netns = cg.netns_map("p-sw", [("client", "p-client"), ("redis1", "p-redis1")])
    state, done = cg.apply("p", budgets, netns, run_dir, backend=kernel)
    group = root / "nm-lab-p" / "redis1"
    assert (group / "cpu.max").read_text() == "3000 10000"
    # cpu is enabled down to the lab's parent group (the kernel refuses cpu.max otherwise).
    assert "+cpu" in (root / "nm-lab-p" / "cgroup.subtree_control").read_text()
    assert (root / "cgroup.subtree_control").read_text() == "+cpu"
    assert any("redis1: 3000 us every 10000 us" in a for a in done)
    assert state.host_of_netns("p-redis1") == "redis1"
    assert state.host_of_netns("p-sw") == "switch"

    # A second apply with the same budgets changes nothing.
    _, again = cg.apply("p", budgets, netns, run_dir, backend=kernel)
    assert again == []

    loaded = cg.load(run_dir)
    assert loaded == state
    cg.join(loaded, "redis1", 4242)
    assert (group / "cgroup.procs").read_text() == "4242"

    (group / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1000000\nnr_throttled 7\nthrottled_usec 250000\n"
    )
    usage = cg.read_usage(run_dir)
    assert usage is not None and usage["backend"] == "v2"
    r1 = usage["hosts"]["redis1"]
    assert (r1["share"], r1["quota_us"], r1["period_us"]) == (0.3, 3000, 10_000)
    assert (r1["usage_s"], r1["nr_throttled"], r1["throttled_s"]) == (1.5, 7, 0.25)
    assert set(usage["hosts"]) == {"switch", "client", "redis1", "controller"}
    json.dumps(usage)  # plain data, for reports


def test_v1_files(tmp_path: Path):
    cpu, acct = tmp_path / "cpu", tmp_path / "cpuacct"
    for root in (cpu, acct):
        (root / "g").mkdir(parents=True)
    (cpu / "g" / "cpu.cfs_quota_us").write_text("-1")
    (cpu / "g" / "cpu.cfs_period_us").write_text("100000")
    kernel = cg.CgroupV1(cpu, acct)
    kernel.create("g", 2500, 10_000)
    assert kernel.limit("g") == (2500, 10_000)
    (acct / "g" / "cpuacct.usage").write_text("2000000000\n")
    (cpu / "g" / "cpu.stat").write_text("nr_periods 10\nnr_throttled 3\nthrottled_time 5000000\n")
    assert kernel.usage_ns("g") == 2_000_000_000
    assert kernel.throttled("g") == (3, 5000)
    assert kernel.procs_files("g") == [cpu / "g" / "cgroup.procs", acct / "g" / "cgroup.procs"]


def test_no_budgets_recorded_reads_none(tmp_path: Path):
    assert cg.load(tmp_path) is None
    assert cg.read_usage(tmp_path) is None
    assert cg.remove(tmp_path) == []


def test_lab_ports_differ_by_prefix():
    nm = lab_ports("nm")
    assert (nm.p4runtime, nm.control_base) == (9559, 17000)
    a, b = lab_ports("nm-a"), lab_ports("nm-b")
    assert a != b
    for ports in (a, b):
        assert 20000 <= ports.p4runtime < 65536 - 20
    assert lab_ports("nm-a") == a  # derived, not random
