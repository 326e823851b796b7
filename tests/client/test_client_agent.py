"""Client library and `netmigrate kv` against a real agent and a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from netmigrate.client import AsyncClient, Client, ServerError
from netmigrate.protocol.constants import Status
from netmigrate.protocol.slot import key_slot


async def test_async_client_every_op(cluster_redis, agent_factory) -> None:
    agent = await agent_factory(cluster_redis)
    redis = cluster_redis.client()
    async with AsyncClient(agent.address, 50000) as c:
        assert await c.set("a", "1") is True
        assert await c.set("a", "2", nx=True) is False
        assert await c.set("a", b"3", xx=True, ttl_ms=10_000) is True
        assert 9000 < redis.pttl("a") <= 10_000
        assert await c.get("a") == b"3"
        assert await c.get("nope") is None
        assert await c.incrby("n") == 1
        assert await c.incrby(b"n", -11) == -10
        assert await c.delete("a") == 1
        assert await c.delete("a") == 0
        mapping = {f"key{i}": f"value{i}" for i in range(40)}  # many slots
        assert len({key_slot(k) for k in mapping}) > 30
        await c.mset(mapping)
        assert await c.mget([*mapping, "absent"]) == [v.encode() for v in mapping.values()] + [None]
        assert redis.get("key7") == b"value7"
        redis.set("text", "abc")
        with pytest.raises(ServerError) as err:
            await c.incrby("text", 1)
        assert err.value.status == Status.ERROR and "integer" in err.value.message


async def test_many_outstanding_on_one_client(cluster_redis, agent_factory) -> None:
    agent = await agent_factory(cluster_redis)
    async with AsyncClient(agent.address, 50000) as c:
        results = await asyncio.gather(*(c.incrby(f"c{i % 10}", 1) for i in range(2000)))
        assert sorted(results) == sorted(v for _ in range(10) for v in range(1, 201))
        values = await asyncio.gather(*(c.get(f"c{i}") for i in range(10)))
        assert values == [b"200"] * 10
    counters = agent.stats.snapshot().counters
    assert counters["batches"] < counters["redis_commands"]


def _agent_in_thread(cluster_redis, **config):
    """An agent on its own loop in a thread, for the blocking client and CLI tests."""
    from netmigrate.agent.app import Agent
    from netmigrate.agent.config import AgentConfig, parse_redis_url

    loop = asyncio.new_event_loop()
    agent = Agent(
        AgentConfig(
            redis=parse_redis_url(cluster_redis.url),
            listen=("127.0.0.1", 0),
            keyspace=50000,
            server_id=1,
            **config,
        )
    )
    loop.run_until_complete(agent.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(agent.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return agent, stop


@pytest.fixture
def threaded_agent(cluster_redis):
    agent, stop = _agent_in_thread(cluster_redis)
    try:
        yield agent
    finally:
        stop()


def test_sync_client_and_pipeline(threaded_agent, cluster_redis) -> None:
    with Client(threaded_agent.address, 50000) as c:
        assert c.set("s", "1") is True
        assert c.get("s") == b"1"
        assert c.incrby("s", 4) == 5
        c.mset([("{p}a", "x"), ("{p}b", "y")])
        assert c.mget(["{p}a", "{p}b", "{p}c"]) == [b"x", b"y", None]
        with c.pipeline() as p:
            p.set("p1", "a").get("p1").incrby("p2", 3).delete("p1").mget(["p1", "p2"])
            p.mset({"m1": "1", "m2": "2"})
            assert len(p) == 6
            assert p.execute() == [True, b"a", 3, 1, [None, b"3"], None]
        p = c.pipeline()
        p.incrby("p1", 1)
        p.set("s", "not a number")
        p.incrby("s", 1)
        results = p.execute(raise_on_error=False)
        assert results[0] == 1 and results[1] is True
        assert isinstance(results[2], ServerError) and results[2].status == Status.ERROR
        p.incrby("s", 1)
        with pytest.raises(ServerError):
            p.execute()
        assert c.aio.stats.sent >= 14
    assert cluster_redis.client().get("m2") == b"2"


async def test_sync_client_refuses_a_running_loop(threaded_agent) -> None:
    from netmigrate.client import NetMigrateError

    client = await asyncio.get_running_loop().run_in_executor(
        None, lambda: Client(threaded_agent.address, 50000)
    )
    try:
        with pytest.raises(NetMigrateError, match="AsyncClient"):
            client.get("k")
    finally:
        await asyncio.get_running_loop().run_in_executor(None, client.close)


def _kv(address, *argv: str) -> subprocess.CompletedProcess[bytes]:
    host, port = address
    cmd = [sys.executable, "-m", "netmigrate.cli", "kv", "--to", f"{host}:{port}"]
    return subprocess.run([*cmd, "--keyspace", "50000", *argv], capture_output=True, timeout=60)


def test_kv_command(threaded_agent, cluster_redis) -> None:
    addr = threaded_agent.address
    assert _kv(addr, "set", "cli", "hello world").stdout == b"OK\n"
    assert _kv(addr, "set", "cli", "x", "--nx").stdout == b"NOT SET (condition not met)\n"
    assert _kv(addr, "get", "cli").stdout == b"hello world\n"
    assert _kv(addr, "get", "missing").stdout == b"(nil)\n"
    assert _kv(addr, "incrby", "cnt", "-3").stdout == b"-3\n"
    assert _kv(addr, "mset", "{m}1", "a", "{m}2", "b").stdout == b"OK\n"
    assert _kv(addr, "mget", "{m}1", "nope", "{m}2").stdout == b"a\n(nil)\nb\n"
    assert _kv(addr, "del", "cli").stdout == b"1\n"
    assert _kv(addr, "set", "ttl", "v", "--ttl-ms", "5000").returncode == 0
    assert 0 < cluster_redis.client().pttl("ttl") <= 5000

    err = _kv(addr, "incrby", "{m}1", "1")
    assert err.returncode == 1 and b"ERROR" in err.stderr and err.stdout == b""
    err = _kv(addr, "mset", "only-a-key")
    assert err.returncode == 2 and b"pairs" in err.stderr
    err = _kv(("127.0.0.1", 9), "--timeout", "0.05", "--retries", "1", "get", "k")
    assert err.returncode == 1 and b"Timeout" in err.stderr
    err = _kv(("no-such-host.invalid", 1), "get", "k")
    assert err.returncode == 1 and b"cannot resolve" in err.stderr
