"""The whole lab stack (namespaces ``nmt9-...``, lab switch, Redis, agents) for e2e tests.

One stack per test module (bringing it up takes ~15 s); it is always taken down, also when a
test fails. Ports are ephemeral so a user's ``nm`` lab or another helper's lab never clash.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from netmigrate.lab.stack import (
    Stack,
    StackConfig,
    free_control_base,
    free_tcp_port,
    stack_down,
    stack_up,
)
from netmigrate.migration import AgentEndpoint, KeyspaceRef, SwitchEndpoint


@pytest.fixture(scope="module")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    tag = secrets.token_hex(2)
    return StackConfig(
        prefix=f"nmt9-{tag}",
        run_dir=Path(f"/run/netmigrate-lab/nmt9-{tag}"),
        grpc_port=free_tcp_port(),
        control_base=free_control_base(),
    )


@pytest.fixture(scope="module")
def stack(stack_config: StackConfig) -> Iterator[Stack]:
    try:
        yield stack_up(stack_config)
    finally:
        stack_down(stack_config)


def agent(stack: Stack, n: int) -> AgentEndpoint:
    s = stack.server(n)
    return AgentEndpoint(n, s.control)


def keyspace(stack: Stack) -> KeyspaceRef:
    return KeyspaceRef(stack.keyspace_id, stack.service_ip, stack.service_port)


def switch(stack: Stack) -> SwitchEndpoint:
    return SwitchEndpoint(stack.p4runtime, device_id=stack.device_id, election_id=20)


def redis_of(stack: Stack, n: int) -> redis.Redis:
    return redis.Redis(unix_socket_path=stack.server(n).redis_socket)


def count_prefix(r: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in r.scan_iter(match=prefix + "*", count=5000))


@dataclass
class LoadProcess:
    proc: subprocess.Popen
    out: Path
    stop_file: Path

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.out / "ready").exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"load generator exited: {self.proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                raise AssertionError("load generator not ready")
            time.sleep(0.1)

    def stop(self, timeout: float = 300.0) -> dict:
        self.stop_file.touch()
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return json.loads((self.out / "load.json").read_text())


@pytest.fixture
def load_factory(stack: Stack, tmp_path: Path) -> Iterator:
    started: list[LoadProcess] = []

    def start(*args: str, name: str = "load") -> LoadProcess:
        out = tmp_path / name
        stop = tmp_path / f"{name}.stop"
        argv = [
            sys.executable, "-m", "netmigrate.cli", "bench", "load",
            "--stack", stack.run_dir, "--out", str(out), "--stop-file", str(stop),
            "--duration", "600", *args,
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lp = LoadProcess(proc, out, stop)
        started.append(lp)
        return lp

    try:
        yield start
    finally:
        for lp in started:
            if lp.proc.poll() is None:
                lp.proc.kill()
                lp.proc.wait()


def assert_clean(doc: dict) -> None:
    """The guarantees of DESIGN section 6 on one load run."""
    check = doc["checker"]
    assert check["ok"], json.dumps(check, indent=1)
    assert doc["errors_total"]["non_retryable"] == 0, doc["errors"]
    assert doc["ops"] > 0
