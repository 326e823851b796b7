"""CPU budgets on a real lab (root, real cgroups and namespaces): a host cannot take more than
its quota, processes started later land in their host's cgroup, ``lab down`` removes every
cgroup, bad ``--cpu`` changes nothing, and two labs of different prefixes run side by side."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import fork_hooks

from netmigrate.lab import cgroups as cg
from netmigrate.lab import down, up
from netmigrate.lab.cpukeeper import KEEPER_SERVICE
from netmigrate.lab.netns import list_netns
from netmigrate.lab.supervise import ProcessSpec, Supervisor
from netmigrate.lab.topology import Topology, lab_ports

BUSY = "while True:\n    pass\n"
#: Long enough for the keeper to sweep at least once before the answer.
SLEEP_THEN_SHOW_CGROUP = "import time; time.sleep(0.5); print(open('/proc/self/cgroup').read())"
#: Sampling noise of cpuacct over ~1.5 s plus a partial first period.
TOLERANCE = 1.15


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _budgets(topology: Topology, spec: str | None = None) -> cg.CpuBudgets:
    b = cg.parse_cpu(spec, topology.host_names)
    assert b is not None
    return b


def _group_of(pid: int) -> str:
    where = cg.detect().group_of(pid)
    assert where is not None
    return where.strip("/")


def _wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def _usage(state: cg.LabCpu, host: str) -> float:
    return state.kernel().usage_ns(state.group(host)) / 1e9


def test_a_busy_host_gets_no_more_than_its_quota(topology: Topology, run_dir: Path):
    up(topology, run_dir, cpu=_budgets(topology, "b=0.2"))
    try:
        state = cg.load(run_dir)
        assert state is not None
        # Two busy loops in host b: without the quota they would take both cores.
        sup = Supervisor(run_dir)
        for i in (1, 2):
            spec = ProcessSpec(
                name=f"busy{i}", argv=(sys.executable, "-c", BUSY), netns=topology.host("b").netns
            )
            sup.start(spec)
        assert set(cg.members(state, "b")) >= {sup.status(f"busy{i}").pid for i in (1, 2)}
        time.sleep(0.3)  # past start-up
        u0, t0 = _usage(state, "b"), time.monotonic()
        time.sleep(1.5)
        used = (_usage(state, "b") - u0) / (time.monotonic() - t0)
        assert used <= 0.2 * TOLERANCE, f"host b used {used:.3f} cores with a 0.2 quota"
        # It did run (a quota that starved it would prove nothing).
        assert used >= 0.2 * 0.5, f"host b used only {used:.3f} cores"
        nr_throttled, _ = state.kernel().throttled(state.group("b"))
        assert nr_throttled > 0
    finally:
        down(topology, run_dir)
    backend = cg.detect()
    assert not backend.exists(f"nm-lab-{topology.prefix}")


def test_a_service_starts_while_the_parent_has_fork_hooks(topology: Topology, run_dir: Path):
    """No Python runs in the child between fork and exec (see ``tests/support/fork_hooks``):
    with budgets on, the service starts, in its host's cgroup from its first instruction."""
    up(topology, run_dir, cpu=_budgets(topology))
    try:
        state = cg.load(run_dir)
        assert state is not None
        sup = Supervisor(run_dir)
        spec = ProcessSpec(
            name="shows-cgroup",
            argv=("sh", "-c", "cat /proc/self/cgroup; exec sleep 300"),
            netns=topology.host("a").netns,
        )
        with fork_hooks.armed():
            pid = sup.start(spec).pid
        assert _group_of(pid) == state.group("a")
        # Printed by `cat` at once, before the keeper's first look could have moved it.
        assert f"/{state.group('a')}" in sup.log_file("shows-cgroup").read_text()
    finally:
        down(topology, run_dir)


def test_processes_started_later_join_their_host(topology: Topology, run_dir: Path):
    up(topology, run_dir, cpu=_budgets(topology))
    try:
        state = cg.load(run_dir)
        assert state is not None
        sup = Supervisor(run_dir)
        keeper = sup.status(KEEPER_SERVICE)
        assert keeper.running

        # A supervised service, restarted: the new process is in its host's cgroup again.
        spec = ProcessSpec(name="svc", argv=("sleep", "300"), netns=topology.host("c").netns)
        first = sup.start(spec).pid
        assert _group_of(first) == state.group("c")
        sup.stop("svc")
        second = sup.start(spec).pid
        assert second != first
        assert _group_of(second) == state.group("c")

        # Started by hand in a host (the root cgroup): the keeper moves it.
        by_hand = subprocess.Popen(
            ["ip", "netns", "exec", topology.host("a").netns, "sleep", "300"],
        )
        try:
            assert _wait_for(lambda: _group_of(by_hand.pid) == state.group("a"), 3.0), _group_of(
                by_hand.pid
            )
        finally:
            by_hand.kill()
            by_hand.wait()

        # `lab exec` joins before exec: even the first instruction runs on the host's budget.
        out = _cli(
            "exec", "--prefix", topology.prefix, "--run-dir", str(run_dir),
            "b", "--", "cat", "/proc/self/cgroup",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"/{state.group('b')}" in out.stdout
        out = _cli(
            "exec", "--prefix", topology.prefix, "--run-dir", str(run_dir),
            "controller", "--", "cat", "/proc/self/cgroup",
        )  # fmt: skip
        assert f"/{state.group('controller')}" in out.stdout

        # A command the controller runs in a host stays the controller's.
        out = _cli(
            "exec", "--prefix", topology.prefix, "--run-dir", str(run_dir), "controller", "--",
            "ip", "netns", "exec", topology.host("a").netns,
            sys.executable, "-c", SLEEP_THEN_SHOW_CGROUP,
        )  # fmt: skip
        assert f"/{state.group('controller')}" in out.stdout, out.stdout
    finally:
        down(topology, run_dir)


def test_lab_down_leaves_no_cgroup(prefix: str, run_dir: Path):
    common = ["--prefix", prefix, "--hosts", "client,redis1", "--run-dir", str(run_dir)]
    backend = cg.detect()
    try:
        out = _cli("up", *common, "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["cpu"]["shares"]["redis1"] == cg.DEFAULT_SERVER  # on by default
        for host in ("switch", "client", "redis1", "controller"):
            assert backend.exists(f"nm-lab-{prefix}/{host}")
        # A process still in a cgroup at `down` (not the lab's to kill) does not keep it.
        state = cg.load(run_dir)
        assert state is not None
        stray = subprocess.Popen(["sleep", "300"])
        try:
            cg.join(state, "controller", stray.pid)
            out = _cli("down", *common)
            assert out.returncode == 0, out.stderr
            assert f"removed cgroup nm-lab-{prefix}" in out.stdout
            assert stray.poll() is None
        finally:
            stray.kill()
            stray.wait()
        assert not backend.exists(f"nm-lab-{prefix}")
        if isinstance(backend, cg.CgroupV1):
            assert backend.cpuacct_root is not None
            assert not (backend.cpuacct_root / f"nm-lab-{prefix}").exists()
        assert not (run_dir / cg.CPU_FILE).exists()
        assert not any(ns.startswith(prefix + "-") for ns in list_netns())
    finally:
        _cli("down", *common)


def test_bad_cpu_changes_nothing(prefix: str, run_dir: Path):
    common = ["--prefix", prefix, "--hosts", "client,redis1", "--run-dir", str(run_dir)]
    backend = cg.detect()
    try:
        # On a new lab: no namespace, no cgroup, no file.
        out = _cli("up", *common, "--cpu", "redis1=lots")
        assert out.returncode == 1
        assert "--cpu: redis1='lots' is not a number of cores" in out.stderr
        assert not any(ns.startswith(prefix + "-") for ns in list_netns())
        assert not backend.exists(f"nm-lab-{prefix}")
        assert not (run_dir / "topology.json").exists()

        out = _cli("up", *common, "--cpu", "redis1=0.3")
        assert out.returncode == 0, out.stderr
        before = (run_dir / cg.CPU_FILE).read_text()
        assert backend.limit(f"nm-lab-{prefix}/redis1") == (
            round(0.3 * cg.DEFAULT_PERIOD_US),
            cg.DEFAULT_PERIOD_US,
        )
        for bad, message in (
            ("redis9=0.1", "unknown host 'redis9'"),
            ("redis1=0.01", "minimum is 1000 us"),
            ("client=1.9", "more than the 2 of this machine"),
        ):
            out = _cli("up", *common, "--cpu", bad)
            assert out.returncode == 1 and message in out.stderr, out.stderr
            assert (run_dir / cg.CPU_FILE).read_text() == before
            assert backend.limit(f"nm-lab-{prefix}/redis1") == (
                round(0.3 * cg.DEFAULT_PERIOD_US),
                cg.DEFAULT_PERIOD_US,
            )

        # Not given: a running lab keeps its budgets; `off` removes them.
        out = _cli("up", *common, "--json")
        assert json.loads(out.stdout)["changed"] is False
        out = _cli("up", *common, "--cpu", "off", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["cpu"] is None
        assert not backend.exists(f"nm-lab-{prefix}")
    finally:
        _cli("down", *common)


def test_two_labs_side_by_side(prefix: str, tmp_path: Path):
    """Different prefixes, default ports: both switches serve P4Runtime at once."""
    labs = [(prefix, tmp_path / "a"), (f"{prefix}-b", tmp_path / "b")]
    try:
        for name, rd in labs:
            out = _cli(
                "up", "--prefix", name, "--hosts", "client,redis1", "--run-dir", str(rd),
                "--with-switch", "--json",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
        ports = [lab_ports(name).p4runtime for name, _ in labs]
        assert ports[0] != ports[1]
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        for name, rd in labs:
            st = _cli("status", "--prefix", name, "--hosts", "client,redis1", "--run-dir", str(rd))
            assert st.returncode == 0, st.stdout + st.stderr
            assert "process switch [python in root namespace]: running" in st.stdout
    finally:
        for name, rd in labs:
            _cli("down", "--prefix", name, "--hosts", "client,redis1", "--run-dir", str(rd))


def test_up_help_shows_the_options_of_up():
    out = subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "lab", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    for option in (
        "--cpu",
        "--with-switch",
        "--full",
        "--grpc-addr",
        "--prefix",
        "--switch-tls-ca",
    ):
        assert option in out.stdout
    assert "usage: netmigrate lab up" in out.stdout


def test_a_daemon_the_controller_starts_in_a_host_moves_there(topology: Topology, run_dir: Path):
    """As Ansible starts agents and the load: start-stop-daemon from the controller's budget."""
    up(topology, run_dir, cpu=_budgets(topology))
    pid_file = run_dir / "daemon.pid"
    try:
        state = cg.load(run_dir)
        assert state is not None
        out = _cli(
            "exec", "--prefix", topology.prefix, "--run-dir", str(run_dir), "controller", "--",
            "ip", "netns", "exec", topology.host("c").netns,
            "start-stop-daemon", "--start", "--background", "--make-pidfile",
            "--pidfile", str(pid_file), "--exec", "/bin/sleep", "--", "300",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        pid = int(pid_file.read_text())
        assert _wait_for(lambda: _group_of(pid) == state.group("c"), 3.0), _group_of(pid)
    finally:
        down(topology, run_dir)  # kills what is left in the namespaces


def test_the_stack_with_budgets_and_a_restarted_agent(prefix: str, tmp_path: Path):
    """The whole stack (switch, Redis, agents) under budgets; a restarted agent is back in its
    host's cgroup, and the switch (root namespace) is on the switch's budget."""
    from netmigrate.lab.stack import (
        StackConfig,
        free_tcp_port,
        stack_down,
        stack_up,
        start_agent,
        stop_agent,
    )

    config = StackConfig(
        prefix=prefix,
        redis_hosts=("redis1", "redis2"),
        run_dir=tmp_path / "run",
        grpc_port=free_tcp_port(),
        control_base=lab_ports(prefix).control_base,
    )
    budgets = cg.parse_cpu(None, config.topology().host_names)
    assert budgets is not None
    config = dataclasses.replace(config, cpu=budgets)
    try:
        stack = stack_up(config)
        state = cg.load(stack.run_dir)
        assert state is not None
        sup = Supervisor(stack.run_dir)
        assert _group_of(sup.status("switch").pid or 0) == state.group("switch")
        for name in ("redis1", "redis2"):
            for svc in (f"{name}-redis", f"{name}-agent"):
                assert _group_of(sup.status(svc).pid or 0) == state.group(name), svc
        old = sup.status("redis1-agent").pid
        assert stop_agent(stack, "redis1") is True
        assert start_agent(config, stack, "redis1") is True
        new = sup.status("redis1-agent").pid
        assert new is not None and new != old
        assert _group_of(new) == state.group("redis1")
    finally:
        stack_down(config)
    assert not cg.detect().exists(f"nm-lab-{prefix}")
