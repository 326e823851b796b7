"""Fixtures for the unit tests of the collection's plugins.

They run under ``ansible-test units`` (scripts/collection_checks.sh), which imports the
collection as ``ansible_collections.netmigrate.core`` and runs every test in its own fork: so
fixtures here are function-scoped (a session fixture set up in a forked child would never be
torn down). Under a plain ``pytest tests`` from the repository root the collection is made
importable the same way, with Ansible's own collection loader over a symlink tree.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

_COLLECTION_ROOT = Path(__file__).resolve().parents[3]


def _make_collection_importable() -> None:
    try:
        import ansible_collections.netmigrate.core.plugins  # noqa: F401  (ansible-test did it)

        return
    except ImportError:
        pass
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    tree = Path(tempfile.mkdtemp(prefix="nm-unit-collections-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    (tree / "ansible_collections" / "netmigrate").mkdir(parents=True)
    (tree / "ansible_collections" / "netmigrate" / "core").symlink_to(_COLLECTION_ROOT)
    _AnsibleCollectionFinder(paths=[str(tree)])._install()


_make_collection_importable()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProc:
    """One redis-server in cluster mode on 127.0.0.1, with or without a config file."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    config_file: Path | None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_redis(
    directory: Path,
    *,
    config_file: bool = True,
    extra: dict[str, str] | None = None,
    attempts: int = 5,
) -> RedisProc:
    """Start redis-server on free ports (the cluster bus port too); retry a lost port race."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (Debian package redis-server)")
    for _attempt in range(attempts):
        port, bus_port = free_port(), free_port()
        if port == bus_port:
            continue
        settings = {
            "port": str(port),
            "bind": "127.0.0.1",
            "dir": str(directory),
            "logfile": str(directory / "redis.log"),
            "save": '""',
            "appendonly": "no",
            "cluster-enabled": "yes",
            "cluster-config-file": str(directory / f"nodes-{port}.conf"),
            "cluster-port": str(bus_port),
            **(extra or {}),
        }
        conf = None
        if config_file:
            conf = directory / f"redis-{port}.conf"
            conf.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
            argv = [binary, str(conf)]
        else:
            argv = [binary]
            for k, v in settings.items():
                argv += [f"--{k}", "" if v == '""' else v]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = RedisProc(port, directory, proc, conf)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if server.client(socket_connect_timeout=0.2).ping():
                    return server
            except redis.ConnectionError:
                time.sleep(0.02)
        server.stop()
        if "Address already in use" not in server.log():
            raise RuntimeError(f"redis-server did not start:\n{server.log()[-2000:]}")
    raise RuntimeError("redis-server did not start: no free port pair after retries")


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for connection-refused tests)."""
    return free_port()


@pytest.fixture
def redis_node_server(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh cluster-mode redis-server with a config file; stopped after the test."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_node_server_with_socket(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh cluster-mode redis-server that also listens on ``tmp_path/redis.sock``."""
    server = start_redis(tmp_path, extra={"unixsocket": str(tmp_path / "redis.sock")})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_node_server_with_aclfile(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh cluster-mode redis-server whose users live in ``tmp_path/users.acl``."""
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("user default on nopass ~* &* +@all\n")
    server = start_redis(tmp_path, extra={"aclfile": str(aclfile)})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_node_server_without_config(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh cluster-mode redis-server started with arguments only (no CONFIG REWRITE)."""
    server = start_redis(tmp_path, config_file=False)
    try:
        yield server
    finally:
        server.stop()
