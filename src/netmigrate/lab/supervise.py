"""Process supervision for the lab: start / stop a process inside a namespace, idempotently.

There is no systemd in a lab namespace, so each service is a detached process (own session)
with three files under a run directory:

* ``<name>.pid`` — the pid, for humans and for tools that expect a pid file;
* ``<name>.state`` — (JSON) what identifies the running process: pid, its kernel start time (so a
  recycled pid is never mistaken for our process), the namespace and a fingerprint of the
  command line and environment. Only a SHA-256 fingerprint is stored, because arguments and
  environment may carry secrets (Redis passwords) that must not land on disk;
* ``<name>.log`` — the process's stdout and stderr (appended).

``start`` is a no-op when the same command already runs; a changed command restarts it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netmigrate.lab import cgroups
from netmigrate.lab.errors import LabError
from netmigrate.lab.netns import in_netns
from netmigrate.netns import NetnsError, call_in_netns

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOG_TAIL = 20
#: With no readiness check, how long a fresh process must survive to count as started.
SETTLE_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    #: Network namespace to run in; None = the caller's (root) namespace.
    netns: str | None = None
    #: Added to the supervisor's environment. Never logged, only fingerprinted.
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    #: The lab host whose CPU budget the process runs under; None: the host of ``netns``.
    #: Not part of the fingerprint: a budget changes without restarting anything.
    cpu_host: str | None = None
    #: What else the process depends on beyond its command line, e.g. a digest of files it
    #: reads once at start (TLS material): a changed value restarts it as a changed command does.
    identity: str = ""

    def fingerprint(self) -> str:
        doc: dict[str, Any] = {
            "argv": list(self.argv),
            "netns": self.netns,
            "env": sorted(self.env.items()),
            "cwd": self.cwd,
        }
        # Only when set: a process started before this field existed keeps its fingerprint.
        if self.identity:
            doc["identity"] = self.identity
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    name: str
    running: bool
    pid: int | None
    netns: str | None
    program: str | None
    pid_file: str
    log_file: str
    #: The process running now was started outside the supervisor (restarted by hand) and
    #: found by its command line; the supervisor tracks it from now on.
    adopted: bool = False


_PYTHON_RE = re.compile(r"^python[0-9.]*$")


def canonical_command(argv: Sequence[str]) -> list[str]:
    """``argv`` without what differs between two ways of starting the same program: the
    interpreter's path, ``python -m netmigrate.cli`` versus the ``netmigrate`` script, a
    program's directory."""
    args = list(argv)
    if not args:
        return args
    head = os.path.basename(args[0])
    if _PYTHON_RE.match(head):
        if args[1:3] == ["-m", "netmigrate.cli"]:
            return ["netmigrate", *args[3:]]
        if len(args) > 1 and os.path.basename(args[1]) == "netmigrate":
            return ["netmigrate", *args[2:]]
        return ["python", *args[1:]]
    return [head, *args[1:]]


def command_fingerprint(argv: Sequence[str]) -> str:
    """What identifies a service's process among others (hashed: arguments may hold secrets)."""
    return hashlib.sha256(json.dumps(canonical_command(argv)).encode()).hexdigest()


def _netns_inode(netns: str | None) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}" if netns else "/proc/1/ns/net").st_ino
    except OSError:
        return None


def _find_by_command(netns: str | None, fingerprint: str) -> int | None:
    """The oldest process in ``netns`` whose command line has ``fingerprint``."""
    inode = _netns_inode(netns)
    if inode is None:
        return None
    found: list[tuple[int, int]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                continue
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
        if argv and command_fingerprint(argv) == fingerprint:
            stat = _proc_stat(pid)
            if stat is not None and stat[0] not in ("Z", "X"):
                found.append((stat[1], pid))
    return min(found)[1] if found else None


@dataclass(frozen=True, slots=True)
class StartResult:
    changed: bool
    pid: int


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return _alive(pid, None)


def _alive(pid: int, start_time: int | None) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    if state in ("Z", "X"):
        return False
    return start_time is None or started == start_time


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (a zombie otherwise lingers until we exit)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Supervisor:
    """Services of one run directory (one lab)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)

    # --- files ---

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def state_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.state"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / ".supervise.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file(name).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            # A torn or foreign file: treat the service as not running, start will replace it.
            return None

    # --- queries ---

    def names(self) -> list[str]:
        if not self.run_dir.is_dir():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.state") if _NAME_RE.match(p.stem))

    def status(self, name: str) -> ProcessStatus:
        _check_name(name)
        state = self._read_state(name)
        running = False
        adopted = False
        pid = None
        if state is not None:
            pid = int(state["pid"])
            running = _alive(pid, state.get("start_time"))
            adopted = running and bool(state.get("adopted"))
            if not running:
                _reap(pid)
                found = self._adopt(name, state)
                if found is not None:
                    pid, running, adopted = found, True, True
        return ProcessStatus(
            name=name,
            running=running,
            pid=pid if running else None,
            netns=None if state is None else state.get("netns"),
            program=None if state is None else state.get("program"),
            pid_file=str(self.pid_file(name)),
            log_file=str(self.log_file(name)),
            adopted=adopted,
        )

    def _adopt(self, name: str, state: dict[str, Any]) -> int | None:
        """A service restarted by hand (same command, same namespace) is tracked again: its
        pid replaces the dead one, so status, stop and ``lab down`` reach it."""
        command = state.get("command")
        if not command:
            return None
        pid = _find_by_command(state.get("netns"), command)
        if pid is None:
            return None
        stat = _proc_stat(pid)
        with self._locked():
            if self._read_state(name) != state:
                return None  # started or stopped meanwhile
            _write_atomic(self.pid_file(name), f"{pid}\n")
            start_time = None if stat is None else stat[1]
            new = {**state, "pid": pid, "start_time": start_time, "adopted": True}
            _write_atomic(self.state_file(name), json.dumps(new))
        return pid

    # --- start / stop ---

    def start(
        self,
        spec: ProcessSpec,
        *,
        ready: Callable[[], bool] | None = None,
        timeout: float = 15.0,
    ) -> StartResult:
        """Ensure ``spec`` runs. ``ready`` (polled) says when the service is usable."""
        _check_name(spec.name)
        if not spec.argv:
            raise LabError(f"{spec.name}: empty command")
        with self._locked():
            state = self._read_state(spec.name)
            if state is not None and _alive(int(state["pid"]), state.get("start_time")):
                if state.get("fingerprint") == spec.fingerprint():
                    # Budgets may have been switched on since it started.
                    self._join_budget(spec, int(state["pid"]))
                    return StartResult(changed=False, pid=int(state["pid"]))
                self._stop_locked(spec.name, timeout=timeout)
            pid = self._spawn(spec)
        try:
            self._wait_started(spec.name, pid, ready, timeout)
        except LabError:
            self.stop(spec.name)
            raise
        return StartResult(changed=True, pid=pid)

    def _budget_host(self, spec: ProcessSpec) -> tuple[cgroups.LabCpu, str] | None:
        state = cgroups.load(self.run_dir)
        if state is None:
            return None
        host = spec.cpu_host or state.host_of_netns(spec.netns)
        if host is None or host not in state.shares:
            return None
        return state, host

    def _join_budget(self, spec: ProcessSpec, pid: int) -> None:
        budget = self._budget_host(spec)
        if budget is not None:
            with contextlib.suppress(LabError):  # it exited meanwhile
                cgroups.join(*budget, pid)

    def _spawn(self, spec: ProcessSpec) -> int:
        argv = in_netns(spec.netns, spec.argv)
        budget = self._budget_host(spec)
        if budget is not None:
            # The child joins its host's cgroup before it execs, so not one instruction of it
            # runs on another host's CPU (threads and children it makes inherit the cgroup).
            argv = cgroups.join_argv(*budget, argv)
        env = {**os.environ, **spec.env}
        log_fd = os.open(
            self.log_file(spec.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640
        )
        try:
            # A new session: the service outlives the command that started it and a signal to
            # its process group reaches any children it forks.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"{spec.name}: cannot start {spec.argv[0]}: {exc}") from exc
        finally:
            os.close(log_fd)
        stat = _proc_stat(proc.pid)
        state = {
            "pid": proc.pid,
            "start_time": None if stat is None else stat[1],
            "fingerprint": spec.fingerprint(),
            "command": command_fingerprint(spec.argv),
            "netns": spec.netns,
            "program": os.path.basename(spec.argv[0]),
        }
        _write_atomic(self.pid_file(spec.name), f"{proc.pid}\n")
        _write_atomic(self.state_file(spec.name), json.dumps(state))
        return proc.pid

    def _wait_started(
        self, name: str, pid: int, ready: Callable[[], bool] | None, timeout: float
    ) -> None:
        deadline = time.monotonic() + (SETTLE_SECONDS if ready is None else timeout)
        while True:
            if not self.status(name).running:
                raise LabError(f"{name} exited during start-up:\n{self.log_tail(name)}")
            if ready is not None and ready():
                return
            if time.monotonic() >= deadline:
                if ready is None:
                    return
                raise LabError(
                    f"{name} (pid {pid}) not ready after {timeout:.0f}s:\n{self.log_tail(name)}"
                )
            time.sleep(0.05)

    def stop(self, name: str, *, timeout: float = 10.0) -> bool:
        """Stop ``name`` (SIGTERM, then SIGKILL after ``timeout``). True if it was running."""
        _check_name(name)
        with self._locked():
            return self._stop_locked(name, timeout=timeout)

    def _stop_locked(self, name: str, *, timeout: float) -> bool:
        state = self._read_state(name)
        was_running = False
        if state is not None:
            pid = int(state["pid"])
            start_time = state.get("start_time")
            if _alive(pid, start_time):
                was_running = True
                _signal(pid, signal.SIGTERM)
                if not _wait_dead(pid, start_time, timeout):
                    _signal(pid, signal.SIGKILL)
                    if not _wait_dead(pid, start_time, 5.0):
                        raise LabError(f"{name} (pid {pid}) survives SIGKILL")
            _reap(pid)
        for path in (self.pid_file(name), self.state_file(name)):
            path.unlink(missing_ok=True)
        return was_running

    def stop_all(self, *, timeout: float = 10.0) -> list[str]:
        """Stop every service of this run directory; the names that were running."""
        return [name for name in self.names() if self.stop(name, timeout=timeout)]

    def remove_files(self, name: str) -> None:
        """Delete the service's pid, state and log files (after :meth:`stop`)."""
        if self.status(name).running:
            raise LabError(f"{name} is running; stop it first")
        for path in (self.pid_file(name), self.state_file(name), self.log_file(name)):
            path.unlink(missing_ok=True)

    def log_tail(self, name: str, lines: int = _LOG_TAIL) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise LabError(f"invalid service name {name!r}")


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        # The service leads its own session and process group (start_new_session): signal the
        # group so that helpers it forked go too; fall back to the pid alone.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise LabError(f"signal {sig.name} to pid {pid}: {exc}") from exc


def _wait_dead(pid: int, start_time: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, start_time):
        _reap(pid)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def tcp_ready(host: str, port: int, netns: str | None = None) -> Callable[[], bool]:
    """A readiness check: True once ``host:port`` accepts TCP connections (inside ``netns``)."""

    def try_connect() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    if netns is None:
        return try_connect

    def try_connect_in_netns() -> bool:
        try:
            return call_in_netns(netns, try_connect)
        except NetnsError as exc:
            # A LabError, so that start() stops the process it just spawned.
            raise LabError(str(exc)) from exc

    return try_connect_in_netns


def unix_ready(path: Path | str) -> Callable[[], bool]:
    """A readiness check: True once the unix socket ``path`` accepts connections."""

    def try_connect() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(path))
            except OSError:
                return False
            return True

    return try_connect
