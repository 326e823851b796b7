"""Process supervision: real processes inside real namespaces, pid files, idempotence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmigrate.lab import LabError, ProcessSpec, Supervisor, Topology, down, tcp_ready, up
from netmigrate.lab import netns as nx

pytestmark = pytest.mark.root

SLEEPER = "import time, sys; print('started', flush=True); time.sleep(600)"


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _sleeper(name: str, netns: str | None, *extra: str) -> ProcessSpec:
    return ProcessSpec(name=name, argv=(sys.executable, "-c", SLEEPER, *extra), netns=netns)


@pytest.fixture
def sup(run_dir: Path) -> Iterator[Supervisor]:
    s = Supervisor(run_dir)
    yield s
    s.stop_all(timeout=2)


@pytest.fixture
def one_ns(prefix: str) -> str:
    ns = f"{prefix}-p"
    nx.add_netns(ns)
    return ns  # the prefix fixture deletes it


def test_start_runs_the_process_in_the_namespace_with_pid_and_log(sup: Supervisor, one_ns: str):
    result = sup.start(_sleeper("svc", one_ns))
    assert result.changed
    st = sup.status("svc")
    assert st.running and st.pid == result.pid and st.netns == one_ns
    assert Path(st.pid_file).read_text().strip() == str(result.pid)
    assert _netns_inode(result.pid) == os.stat(f"/run/netns/{one_ns}").st_ino
    assert _netns_inode(result.pid) != _netns_inode(os.getpid())
    deadline = time.monotonic() + 5
    while "started" not in Path(st.log_file).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "started" in Path(st.log_file).read_text()


def test_start_twice_is_a_no_op_and_a_changed_command_restarts(sup: Supervisor, one_ns: str):
    first = sup.start(_sleeper("svc", one_ns))
    again = sup.start(_sleeper("svc", one_ns))
    assert again.changed is False and again.pid == first.pid
    changed = sup.start(_sleeper("svc", one_ns, "--other-arg"))
    assert changed.changed and changed.pid != first.pid
    assert not Path(f"/proc/{first.pid}").exists() or _zombie_or_gone(first.pid)
    assert sup.status("svc").pid == changed.pid


def _zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_stop_kills_and_removes_pid_files_and_is_idempotent(sup: Supervisor):
    started = sup.start(_sleeper("svc", None))
    assert sup.stop("svc") is True
    assert _zombie_or_gone(started.pid)
    st = sup.status("svc")
    assert not st.running and st.pid is None
    assert not Path(st.pid_file).exists()
    assert sup.stop("svc") is False
    assert sup.names() == []


def test_a_process_that_ignores_sigterm_is_killed(sup: Supervisor):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ready', flush=True); time.sleep(600)"
    )
    spec = ProcessSpec(name="stubborn", argv=(sys.executable, "-c", code))
    started = sup.start(spec, ready=lambda: "ready" in sup.log_file("stubborn").read_text())
    t0 = time.monotonic()
    assert sup.stop("stubborn", timeout=0.5) is True
    assert time.monotonic() - t0 < 5
    assert _zombie_or_gone(started.pid)


def test_a_process_dying_at_start_is_reported_with_its_log(sup: Supervisor):
    spec = ProcessSpec(
        name="crasher",
        argv=(sys.executable, "-c", "import sys; print('bad config x'); sys.exit(3)"),
    )
    # A readiness check that never passes: the death is noticed however slow the start is.
    with pytest.raises(LabError, match="exited during start-up") as err:
        sup.start(spec, ready=lambda: False, timeout=60)
    assert "bad config x" in str(err.value)
    assert not sup.status("crasher").running
    assert not sup.state_file("crasher").exists()


def test_a_process_never_ready_is_stopped(sup: Supervisor):
    spec = _sleeper("slow", None)
    with pytest.raises(LabError, match="not ready"):
        sup.start(spec, ready=lambda: False, timeout=0.5)
    assert not sup.status("slow").running
    assert not sup.pid_file("slow").exists()


def test_a_stale_pid_file_is_not_mistaken_for_a_running_service(sup: Supervisor):
    started = sup.start(_sleeper("svc", None))
    sup.stop("svc")
    # Forge the state of a service whose pid is alive but is another process (our own pid,
    # with another start time): a recycled pid.
    state = sup.state_file("svc")
    state.write_text(
        f'{{"pid": {os.getpid()}, "start_time": 1, "fingerprint": "x", "netns": null}}'
    )
    assert sup.status("svc").running is False
    restarted = sup.start(_sleeper("svc", None))
    assert restarted.changed and restarted.pid not in (started.pid, os.getpid())
    assert sup.stop("svc") is True
    assert Path(f"/proc/{os.getpid()}").exists()  # we were not killed


def test_secrets_in_argv_and_env_never_reach_the_run_dir(sup: Supervisor):
    spec = ProcessSpec(
        name="secretive",
        argv=(sys.executable, "-c", SLEEPER, "--requirepass=hunter2-argv"),
        env={"REDIS_PASSWORD": "hunter2-env"},
    )
    sup.start(spec)
    for path in sup.run_dir.iterdir():
        text = path.read_text(errors="replace")
        assert "hunter2" not in text, path


def test_bad_names_are_rejected(sup: Supervisor):
    for name in ("", "../x", "a/b", "-x"):
        with pytest.raises(LabError, match="invalid service name"):
            sup.start(ProcessSpec(name=name, argv=("true",)))
    with pytest.raises(LabError, match="empty command"):
        sup.start(ProcessSpec(name="x", argv=()))
    with pytest.raises(LabError, match="cannot start"):
        sup.start(ProcessSpec(name="x", argv=("/nonexistent/binary",)))


def test_tcp_ready_probes_inside_the_namespace(sup: Supervisor, one_ns: str):
    nx.ip("link", "set", "dev", "lo", "up", netns=one_ns)
    code = (
        "import socket, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(('127.0.0.1', 47123)); s.listen(); time.sleep(600)"
    )
    probe = tcp_ready("127.0.0.1", 47123, netns=one_ns)
    assert probe() is False
    spec = ProcessSpec(name="listener", argv=(sys.executable, "-c", code), netns=one_ns)
    sup.start(spec, ready=probe, timeout=10)
    assert probe() is True
    # The root namespace has no listener on that port: the probe really ran in the namespace.
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("127.0.0.1", 47123))


def test_lab_down_stops_supervised_and_stray_processes(topology: Topology, run_dir: Path):
    up(topology, run_dir)
    pids: list[int] = []
    try:
        sup = Supervisor(run_dir)
        host = topology.hosts[0]
        pids.append(sup.start(_sleeper("agent-a", host.netns)).pid)
        # A process started in a lab namespace behind the supervisor's back.
        pids.append(sup.start(_sleeper("stray", host.netns)).pid)
        sup.state_file("stray").unlink()
        sup.pid_file("stray").unlink()
        result = down(topology, run_dir)
        assert "stopped agent-a" in result.actions
        assert f"{host.netns}: killed leftover processes" in result.actions
        for pid in pids:
            deadline = time.monotonic() + 5
            while not _zombie_or_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _zombie_or_gone(pid)
        assert not run_dir.exists()
    finally:
        down(topology, run_dir)
        for pid in pids:
            if not _zombie_or_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_canonical_command_ignores_how_a_program_was_started():
    from netmigrate.lab.supervise import canonical_command

    module = ["/opt/venv/bin/python3.11", "-m", "netmigrate.cli", "agent", "--server-id", "1"]
    script = ["/usr/bin/python3", "/opt/venv/bin/netmigrate", "agent", "--server-id", "1"]
    assert canonical_command(module) == canonical_command(script)
    assert canonical_command(module) == ["netmigrate", "agent", "--server-id", "1"]
    assert canonical_command(["/usr/bin/redis-server", "x.conf"]) == ["redis-server", "x.conf"]
    assert canonical_command(module) != canonical_command([*module[:-1], "2"])


def test_a_service_restarted_by_hand_is_tracked_again(sup: Supervisor, one_ns: str, run_dir: Path):
    first = sup.start(_sleeper("agent", one_ns, "--server-id", "1")).pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while sup.status("agent").running and time.monotonic() < deadline:
        time.sleep(0.05)
    # Another program with other arguments in the namespace is not taken for it.
    other = subprocess.Popen(
        ["ip", "netns", "exec", one_ns, sys.executable, "-c", SLEEPER, "--server-id", "2"]
    )
    try:
        assert sup.status("agent").running is False
        # Restarted by hand as an operator would: the same command, in the namespace.
        by_hand = subprocess.Popen(
            ["ip", "netns", "exec", one_ns, sys.executable, "-c", SLEEPER, "--server-id", "1"]
        )
        deadline = time.monotonic() + 5
        while not sup.status("agent").running and time.monotonic() < deadline:
            time.sleep(0.05)
        st = sup.status("agent")
        assert st.running and st.adopted and st.pid == by_hand.pid
        assert sup.pid_file("agent").read_text().strip() == str(by_hand.pid)
        # Tracked from now on: stop reaches the process started by hand.
        assert sup.stop("agent") is True
        assert by_hand.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
