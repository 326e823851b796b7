"""Unmodified Redis clients through ``netmigrate gateway`` on the lab (namespaces, lab switch,
three Redis with their agents) while every slot migrates from redis1 to redis2 and back:
redis-cli, redis-benchmark and a redis-py workload over every data type (scripts and functions
included) checked against its
own model, then every key of the workload at its owner exactly once."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
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
from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions, SwitchEndpoint, run
from netmigrate.protocol.constants import SLOT_COUNT

WORKLOAD = Path(__file__).with_name("gateway_workload.py")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    tag = secrets.token_hex(2)
    config = StackConfig(
        prefix=f"nmt15-{tag}",
        run_dir=Path(f"/run/netmigrate-lab/nmt15-{tag}"),
        grpc_port=free_tcp_port(),
        control_base=free_control_base(),
    )
    try:
        yield stack_up(config)
    finally:
        stack_down(config)


def in_client(stack: Stack, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", stack.client_netns, *argv]


def cli(stack: Stack, *args: str) -> str:
    port = stack.gateway.rsplit(":", 1)[1]
    out = subprocess.run(
        in_client(stack, "redis-cli", "-p", port, *args),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def migrate(stack: Stack, src: int, dst: int) -> None:
    ks = KeyspaceRef(stack.keyspace_id, stack.service_ip, stack.service_port)
    result = asyncio.run(
        run(
            AgentEndpoint(src, stack.server(src).control),
            AgentEndpoint(dst, stack.server(dst).control),
            range(SLOT_COUNT),
            keyspace=ks,
            switch=SwitchEndpoint(stack.p4runtime, device_id=stack.device_id, election_id=20),
            options=MigrationOptions(parallel=64, batch=512, grace=0.5),
            timeout=420,
        )
    )
    assert result.state == "FINALIZED", result.message


def test_clients_through_the_gateway_while_slots_move(stack: Stack, tmp_path: Path) -> None:
    port = stack.gateway.rsplit(":", 1)[1]
    assert cli(stack, "PING") == "PONG"
    assert cli(stack, "HSET", "{ttl}h", "f", "v") == "1"
    assert cli(stack, "EXPIRE", "{ttl}h", "1000") == "1"

    stop = tmp_path / "stop"
    out = tmp_path / "workload.json"
    workload = subprocess.Popen(
        in_client(stack, sys.executable, str(WORKLOAD), port, str(stop), str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bench = subprocess.Popen(
        in_client(
            stack, "redis-benchmark", "-p", port, "-t", "get,set,incr,lpush,hset,zadd",
            "-P", "16", "-c", "8", "-n", "20000", "-r", "10000", "-q",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert workload.poll() is None, workload.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        migrate(stack, 1, 2)
        assert cli(stack, "HGET", "{ttl}h", "f") == "v"
        migrate(stack, 2, 1)
        bench_out, bench_err = bench.communicate(timeout=600)
    finally:
        stop.touch()
        workload.wait(120)
        if bench.poll() is None:
            bench.kill()
    assert workload.returncode == 0, workload.stderr.read()  # type: ignore[union-attr]
    doc = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in doc.items() if k != "keys"}), bench_out)
    assert doc["ops"] > 100
    assert doc["errors"] == 0 and doc["mismatches"] == 0, doc["problems"]
    assert doc["big_fields"] == 1000
    assert bench.returncode == 0, bench_err
    for test in ("SET", "GET", "INCR", "LPUSH", "HSET", "ZADD"):
        assert f"{test}:" in bench_out, bench_out
    assert "rror" not in bench_out + bench_err

    # The TTL set before the migrations is still on the hash, now back at redis1.
    assert 0 < int(cli(stack, "TTL", "{ttl}h")) <= 1000
    owners = [redis.Redis(unix_socket_path=s.redis_socket) for s in stack.servers]
    for key in [*doc["keys"], "{ttl}h"]:
        where = [i + 1 for i, r in enumerate(owners) if r.exists(key)]
        assert where == [1], (key, where)
