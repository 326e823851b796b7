"""Local ``redis-server`` processes on 127.0.0.1, free ports and private temp dirs.

Ports are found by binding port 0; another process may take the port between that probe and
redis-server's own bind, so a start that fails with "Address already in use" is retried on new
ports. A Redis Cluster node also needs its bus port free; it is chosen the same way and set
with ``cluster-port`` (Redis 7) instead of the implicit ``port + 10000``.

Every server lives in its own ``tempfile.mkdtemp`` directory, which :meth:`RedisServer.stop`
removes after the process is gone. Nothing is persisted (no RDB, no AOF). On Linux a server
also gets SIGTERM from the kernel if the harness process dies without cleaning up
(``PR_SET_PDEATHSIG``), so a killed benchmark leaves no server behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

HOST = "127.0.0.1"


class RedisStartError(RuntimeError):
    pass


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisStartError("redis-server not found on PATH (Debian package redis-server)")
    return path


def redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise RedisStartError("redis-cli not found on PATH (Debian package redis-tools)")
    return path


def _die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` that gets SIGTERM when the harness dies, even by SIGKILL.

    ``setpriv`` sets the signal before it execs: no Python may run in the child of a threaded
    harness between fork and exec (a ``preexec_fn`` can crash there).
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return argv if setpriv is None else [setpriv, "--pdeathsig", "TERM", *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def redis_version() -> str:
    out = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


@dataclass
class RedisServer:
    """One running redis-server; create with :func:`start_redis`."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    cluster: bool
    bus_port: int | None = None
    name: str = ""
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.directory / "redis.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self, **kwargs: object) -> Redis:
        return Redis(host=HOST, port=self.port, **kwargs)  # type: ignore[arg-type]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (from /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and delete its directory. Idempotent."""
        proc = self.process
        if proc.poll() is None:
            # SIGTERM makes redis exit without saving (save "" and no AOF are configured).
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _config(port: int, directory: Path, cluster: bool, bus_port: int | None) -> list[str]:
    args = [
        "--port", str(port),
        "--bind", HOST,
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--databases", "1",
    ]  # fmt: skip
    if cluster:
        args += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", "15000",
            "--cluster-port", str(bus_port),
            # Keys of slots in flight must stay reachable: let a node serve what it can.
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
    return args


async def _wait_ready(server: RedisServer, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            raise RedisStartError(
                f"redis-server on port {server.port} exited ({server.process.returncode}):\n"
                + server.log_tail()
            )
        client = server.client(socket_connect_timeout=0.5)
        try:
            if await client.ping():
                return
        except Exception as exc:  # refused / loading: retried until the deadline
            if time.monotonic() > deadline:
                raise RedisStartError(
                    f"redis-server on port {server.port} not ready: {exc}\n" + server.log_tail()
                ) from exc
        finally:
            await client.aclose()
        await asyncio.sleep(0.02)


async def start_redis(
    *,
    cluster: bool = False,
    name: str = "",
    attempts: int = 5,
    timeout: float = 10.0,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> RedisServer:
    """Start one redis-server on free ports; the caller must :meth:`~RedisServer.stop` it.

    ``wrap`` prefixes the command (e.g. to join a CPU-budget cgroup first).
    """
    binary = redis_server_binary()
    last_error: Exception | None = None
    for _ in range(attempts):
        directory = Path(tempfile.mkdtemp(prefix="nm-bench-redis-"))
        port = free_port()
        bus_port = free_port() if cluster else None
        if bus_port == port:
            shutil.rmtree(directory, ignore_errors=True)
            continue
        argv = _die_with_parent([binary, *_config(port, directory, cluster, bus_port)])
        proc = subprocess.Popen(
            argv if wrap is None else wrap(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not hit it before cleanup
        )
        server = RedisServer(port, directory, proc, cluster, bus_port, name or f"{HOST}:{port}")
        try:
            await _wait_ready(server, time.monotonic() + timeout)
            return server
        except BaseException as exc:
            log = server.log_tail()
            server.stop()
            if isinstance(exc, RedisStartError) and "Address already in use" in log:
                last_error = exc
                continue  # lost the port race: try new ports
            raise
    raise RedisStartError(f"could not start redis-server after {attempts} attempts: {last_error}")
