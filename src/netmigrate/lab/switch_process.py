"""Start and stop the lab switch process (``netmigrate switch``).

Two lifetimes, one command line (``python -m netmigrate.cli switch ...``):

* on a lab topology, supervised (:func:`start_switch` / :func:`stop_switch`): it outlives the
  command that started it, and a second start changes nothing. The process runs in the root
  namespace, so that its P4Runtime server listens on 127.0.0.1 there or on a unix socket
  (DESIGN section 8); it opens its AF_PACKET ports inside the switch namespace itself
  (``--netns``). All ports of the topology are given, numbered as the topology plans.
* for one ``with`` block (:func:`run_switch`, used by benchmarks and tests): any arguments, a
  free P4Runtime port by default, and the process stopped on exit, also when the block fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from netmigrate.lab.cgroups import SWITCH
from netmigrate.lab.errors import LabError
from netmigrate.lab.supervise import ProcessSpec, StartResult, Supervisor, tcp_ready, unix_ready
from netmigrate.lab.topology import Topology
from netmigrate.protocol.constants import CPU_PORT

SWITCH_SERVICE = "switch"
DEFAULT_GRPC_ADDR = "127.0.0.1:9559"
#: finsy's default device id; BMv2 uses 0 (DESIGN section 2).
DEFAULT_DEVICE_ID = 1


def parse_grpc_addr(addr: str) -> tuple[str, int] | Path:
    """``HOST:PORT`` -> (host, port); ``unix:/path`` -> the socket's path."""
    if addr.startswith("unix:"):
        path = Path(addr.removeprefix("unix:").removeprefix("//"))
        if not path.is_absolute():
            raise LabError(f"invalid gRPC address {addr!r}: want unix:/absolute/path")
        return path
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LabError(f"invalid gRPC address {addr!r}: want HOST:PORT or unix:/path")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class SwitchTls:
    """Mutual TLS on the lab switch's P4Runtime server, as the switch roles serve it: the
    server's certificate and key, and the CA whose certificates clients must present.

    The switch reads the files by name (no key on a command line, in a unit or in the lab's
    state); the key must be private to its owner (mode 0600 or stricter).
    """

    cert: Path
    key: Path
    client_ca: Path

    def check(self) -> None:
        """Every file is a readable regular file with PEM in it; the key is private."""
        for path, what in ((self.cert, "certificate"), (self.key, "key"), (self.client_ca, "CA")):
            try:
                st = path.stat()
                head = path.read_bytes()[:4096]
            except OSError as exc:
                raise LabError(
                    f"cannot read the switch's TLS {what} {path}: {exc.strerror}"
                ) from None
            if not stat.S_ISREG(st.st_mode) or b"-----BEGIN" not in head:
                raise LabError(f"the switch's TLS {what} {path} is not a PEM file")
        mode = stat.S_IMODE(self.key.stat().st_mode)
        if mode & 0o077:
            raise LabError(
                f"the switch's TLS key {self.key} is readable by others (mode {mode:04o}): "
                "chmod 600 it"
            )

    def argv(self) -> list[str]:
        return [
            *("--tls-cert", str(self.cert)),
            *("--tls-key", str(self.key)),
            *("--tls-ca", str(self.client_ca)),
        ]

    def digest(self) -> str:
        """Of the files' contents: new material at the same paths restarts the switch (it reads
        them once, at start). A hash only; the key itself goes nowhere."""
        h = hashlib.sha256()
        for path in (self.cert, self.key, self.client_ca):
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def switch_spec(
    topology: Topology,
    *,
    grpc_addr: str = DEFAULT_GRPC_ADDR,
    device_id: int = DEFAULT_DEVICE_ID,
    cpu_port: int = CPU_PORT,
    faults: Sequence[str] = (),
    name: str = SWITCH_SERVICE,
    tls: SwitchTls | None = None,
) -> ProcessSpec:
    """The command line of the lab switch serving every port of ``topology``."""
    parse_grpc_addr(grpc_addr)
    argv = [sys.executable, "-m", "netmigrate.cli", "switch", "--netns", topology.switch_netns]
    for port, iface in sorted(topology.switch_ports().items()):
        argv += ["--port", f"{port}={iface}"]
    argv += ["--grpc-addr", grpc_addr, "--device-id", str(device_id), "--cpu-port", str(cpu_port)]
    for fault in faults:
        argv += ["--fault", fault]
    identity = ""
    if tls is not None:
        tls.check()
        argv += tls.argv()
        identity = f"tls:{tls.digest()}"
    # It lives in the root namespace but is the switch host: it runs on the switch's budget.
    return ProcessSpec(name=name, argv=tuple(argv), cpu_host=SWITCH, identity=identity)


def switch_available() -> bool:
    return importlib.util.find_spec("netmigrate.switch.cli") is not None


def start_switch(
    topology: Topology,
    run_dir: Path | str,
    *,
    grpc_addr: str = DEFAULT_GRPC_ADDR,
    device_id: int = DEFAULT_DEVICE_ID,
    cpu_port: int = CPU_PORT,
    faults: Sequence[str] = (),
    timeout: float = 30.0,
    tls: SwitchTls | None = None,
) -> StartResult:
    """Ensure the lab switch runs (idempotent); returns once its P4Runtime port accepts.

    ``tls``: serve P4Runtime with mutual TLS (None: plain text). Switching it on or off, or
    new material in its files, restarts the switch.
    """
    if not switch_available():
        raise LabError("the lab switch is not installed (no module netmigrate.switch.cli)")
    spec = switch_spec(
        topology,
        grpc_addr=grpc_addr,
        device_id=device_id,
        cpu_port=cpu_port,
        faults=faults,
        tls=tls,
    )
    where = parse_grpc_addr(grpc_addr)
    ready = unix_ready(where) if isinstance(where, Path) else tcp_ready(*where)
    return Supervisor(run_dir).start(spec, ready=ready, timeout=timeout)


def stop_switch(run_dir: Path | str) -> bool:
    return Supervisor(run_dir).stop(SWITCH_SERVICE)


# --- a switch process for one with-block ----------------------------------------------------


class SwitchStartError(RuntimeError):
    pass


@dataclass
class SwitchProcess:
    """A running ``netmigrate switch``; ``address`` is its P4Runtime address."""

    proc: subprocess.Popen
    address: str
    log_path: Path
    control_socket: Path | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def switch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "netmigrate.cli", "switch", *args]


@contextlib.contextmanager
def run_switch(
    *args: str,
    grpc_addr: str = "127.0.0.1:0",
    control: bool = False,
    timeout: float = 30.0,
    log_level: str = "INFO",
    cpu: int | None = None,
    keep_log: Path | None = None,
) -> Iterator[SwitchProcess]:
    """Start the switch with ``args`` (plus address, control socket); stop it on exit.

    ``cpu``: pin the switch process to that CPU (benchmarks). ``keep_log``: copy the
    switch's log there when it stops.
    """
    # The switch prints this line once it serves; importing its CLI module here (not at the
    # top) keeps the supervised path above free of the switch's dependencies.
    from netmigrate.switch.cli import READY_PREFIX

    ready = re.compile(re.escape(READY_PREFIX) + r" grpc=(\S+)")
    with tempfile.TemporaryDirectory(prefix="nmt3-switch-") as tmp:
        log_path = Path(tmp) / "switch.log"
        argv = switch_argv(*args, "--grpc-addr", grpc_addr, "--log-level", log_level)
        ctl = Path(tmp) / "control.sock" if control else None
        if ctl is not None:
            argv += ["--control-socket", str(ctl)]
        if cpu is not None:
            # taskset, not a preexec_fn: no Python may run in the child of a threaded process.
            argv = ["taskset", "-c", str(cpu), *argv]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
            )
        sw = SwitchProcess(proc, "", log_path, ctl)
        try:
            sw.address = _wait_ready(proc, ready, timeout, log_path)
            yield sw
        finally:
            sw.stop()
            if keep_log is not None:
                keep_log.write_bytes(log_path.read_bytes())


def _wait_ready(
    proc: subprocess.Popen, ready: re.Pattern[str], timeout: float, log_path: Path
) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = ready.search(buf.decode(errors="replace"))
            if m:
                return m.group(1)
    finally:
        sel.close()
    proc.kill()
    proc.wait()
    raise SwitchStartError(
        f"the switch did not become ready (exit {proc.returncode}):\n"
        + log_path.read_text(errors="replace")[-4000:]
    )
