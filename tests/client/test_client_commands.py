"""Any Redis command through our client (``execute``, ``execute_raw``, ``transaction``) against
a real agent and a real redis-server: classified from the command table, Redis' own replies and
errors, refusals before anything is sent."""

from __future__ import annotations

import asyncio

import pytest

from netmigrate.client import AsyncClient, Client, CommandRefused, RedisReplyError
from netmigrate.client.aio import parse_reply
from netmigrate.protocol.constants import Op
from netmigrate.rediscmd.table import CommandTable

pytestmark = pytest.mark.redis


async def test_execute_every_type(cluster_redis, agent_factory) -> None:
    agent = await agent_factory(cluster_redis)
    redis = cluster_redis.client()
    async with AsyncClient(agent.address, 50000) as c:
        assert await c.execute("HSET", "h", "f", "1", "g", "2") == 2
        assert await c.execute("HGETALL", "h") == [b"f", b"1", b"g", b"2"]
        assert await c.execute("EXPIRE", "h", 100) == 1
        assert 0 < redis.ttl("h") <= 100
        assert await c.execute("RPUSH", "l", "a", "b") == 2
        assert await c.execute("LPOP", "l") == b"a"
        assert await c.execute("SADD", "s", "x") == 1
        assert await c.execute("ZADD", "z", "1.5", "m") == 1
        assert await c.execute("ZSCORE", "z", "m") == b"1.5"
        assert await c.execute("SET", "k", "v") == "OK"
        assert await c.execute("GET", "nope") is None
        assert await c.execute("ECHO", "hi") == b"hi"  # keyless: any server answers
        assert await c.execute_raw("LRANGE", "l", 0, -1) == b"*1\r\n$1\r\nb\r\n"
        # Redis' own error replies raise RedisReplyError, with Redis' text.
        with pytest.raises(RedisReplyError) as wrong:
            await c.execute("INCR", "h")
        assert wrong.value.code == "WRONGTYPE"
        with pytest.raises(RedisReplyError, match="wrong number of arguments"):
            await c.execute("GET")
        # Keys of several slots: Redis Cluster's CROSSSLOT, before anything is sent.
        sent = c.stats.sent
        with pytest.raises(RedisReplyError) as cross:
            await c.execute("MSET", "a", "1", "b", "2")
        assert cross.value.code == "CROSSSLOT"
        with pytest.raises(CommandRefused, match="blocking"):
            await c.execute("BLPOP", "l", 0)
        with pytest.raises(CommandRefused, match="whole keyspace"):
            await c.execute("KEYS", "*")
        assert c.stats.sent == sent
        # A transaction of one slot runs atomically; a failed command is in the results.
        results = await c.transaction(
            [("SET", "{t}a", "1"), ("INCR", "{t}a"), ("HSET", "{t}a", "f", "v")]
        )
        assert results[:2] == ["OK", 2] and isinstance(results[2], RedisReplyError)
        with pytest.raises(RedisReplyError, match="CROSSSLOT"):
            await c.transaction([("SET", "a", "1"), ("SET", "b", "1")])
    requests = agent.stats.snapshot().requests
    assert requests[Op.CMD_READ.name] > 0 and requests[Op.CMD_WRITE.name] > 0


async def test_sync_client_execute_and_pipeline(cluster_redis, agent_factory) -> None:
    agent = await agent_factory(cluster_redis)

    def run() -> None:  # the blocking client, in a thread: the agent runs on this loop
        with Client(agent.address, 50000, command_table=CommandTable.shipped()) as c:
            assert c.execute("LPUSH", "q", "1", "2") == 2
            assert c.execute_raw("LLEN", "q") == b":2\r\n"
            assert c.transaction([("LPOP", "q"), ("LLEN", "q")]) == [b"2", 1]
            with c.pipeline() as p:
                p.command("SADD", "s", "a").command("SCARD", "s").get("x")
                assert p.execute() == [1, 1, None]

    await asyncio.to_thread(run)


def test_parse_reply() -> None:
    assert parse_reply(b"*3\r\n+OK\r\n$-1\r\n:5\r\n") == ["OK", None, 5]
    assert parse_reply(b"*-1\r\n") is None
    with pytest.raises(RedisReplyError, match="ERR boom"):
        parse_reply(b"-ERR boom\r\n")
