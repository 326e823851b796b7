"""The gateway over the real keyspace path: redis-py and redis-cli -> ``netmigrate gateway``
(its keyspace is our client) -> a real agent -> a real redis-server. No switch here (the lab's
tests add it): the agent is the keyspace's only server."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess

import pytest
import redis

from netmigrate.gateway import cli
from netmigrate.rediscmd.resp import ProtocolError, ReplyParser

pytestmark = pytest.mark.redis


def _every_type(port: int) -> None:
    # redis-py 8 speaks RESP3 unless told otherwise: served too.
    assert redis.Redis(port=port).ping() is True
    r = redis.Redis(port=port, protocol=2)
    assert r.ping() is True
    assert r.hset("{t}h", mapping={"f": "1", "g": "2"}) == 2
    assert r.hgetall("{t}h") == {b"f": b"1", b"g": b"2"}
    assert r.expire("{t}h", 100) is True and 0 < r.ttl("{t}h") <= 100
    assert r.lpush("{t}l", "a", "b") == 2 and r.lrange("{t}l", 0, -1) == [b"b", b"a"]
    assert r.sadd("{t}s", "x", "y") == 2 and r.smembers("{t}s") == {b"x", b"y"}
    assert r.zadd("{t}z", {"m": 1.5}) == 1 and r.zincrby("{t}z", 0.25, "m") == 1.75
    assert r.set("k", "v") is True and r.get("k") == b"v" and r.get("nope") is None
    assert r.incrby("n", 5) == 5 and r.getdel("n") == b"5"
    pipe = r.pipeline(transaction=True)
    pipe.hincrby("{t}h", "f", 2).hget("{t}h", "f").expire("{t}h", 50)
    # Inside a transaction a blocking command does not block, as in Redis' own MULTI.
    pipe.rpush("{t}q", "a").brpoplpush("{t}q", "{t}r", 0).blpop(["{t}empty"], 0)
    assert pipe.execute() == [3, b"3", True, 1, b"a", None]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lpush("k", "x")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        r.mget("a", "b")
    # A hash of 1,000 fields, 100 per HSET; one HSET of all of them does not fit a datagram.
    for n in range(0, 1000, 100):
        assert r.hset("{t}big", mapping={f"f{i}": str(i) for i in range(n, n + 100)}) == 100
    assert r.hlen("{t}big") == 1000
    with pytest.raises(redis.ResponseError, match="exceeds the max datagram"):
        r.hset("{t}huge", mapping={f"f{i}": str(i) for i in range(1000)})
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "HGET", "{t}h", "g"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "2"


async def test_redis_clients_through_the_gateway_and_an_agent(gateway_port, cluster_redis) -> None:
    await asyncio.to_thread(_every_type, gateway_port)
    r = cluster_redis.client()
    assert r.hget("{t}h", "f") == b"3" and 0 < r.ttl("{t}h") <= 50
    assert r.hlen("{t}big") == 1000


#: Replies whose RESP3 shape differs from RESP2 (maps, sets, doubles, nulls inside arrays,
#: pairs), and the ones a Lua table cannot hold as they are (a null at the end of an array).
RESP3_COMMANDS = [
    b"ZADD {r}z 0.1 a 1e300 b inf c",
    b"HSET {r}h f 1 g 2",
    b"SADD {r}s x",
    b"ZSCORE {r}z a",
    b"ZRANGE {r}z 0 -1 WITHSCORES",
    b"ZMSCORE {r}z a nope",
    b"HGETALL {r}h",
    b"HGETALL {r}nope",
    b"SMEMBERS {r}s",
    b"MGET {r}nope {r}h {r}nope",
    b"HMGET {r}h nope f nope",
    b"GET {r}nope",
    b"ZINCRBY {r}z 0.25 a",
    b"ZPOPMIN {r}z 2",
    b"LPOP {r}nope 2",
    b"SET {r}str v GET",
    b"OBJECT ENCODING {r}h",
    b"MULTI",
    b"ZSCORE {r}z c",
    b"HGETALL {r}h",
    b"EXEC",
    b"DEL {r}z {r}h {r}s {r}str",
]


def _raw_resp3(port: int) -> list[bytes]:
    """Each command's reply bytes after HELLO 3 (one at a time: they are inline commands)."""
    out = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"HELLO 3\r\n")
        reader = ReplyParser
        buf = b""
        for command in [b"", *RESP3_COMMANDS]:
            if command:
                s.sendall(command + b"\r\n")
            while True:
                try:
                    p = reader(buf)
                    p._value()
                    break
                except (ProtocolError, ValueError, IndexError):
                    buf += s.recv(65536)
            if command:
                out.append(buf[: p._pos])
            buf = buf[p._pos :]
    return out


async def test_resp3_replies_are_redis_own_bytes(gateway_and_client, cluster_redis) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway_and_client
    via = await asyncio.to_thread(_raw_resp3, port)
    direct = await asyncio.to_thread(_raw_resp3, cluster_redis.port)
    assert via == direct
    # A double, and nulls around a value in an array (Lua alone would lose the last one).
    assert via[3] == b",0.10000000000000001\r\n"
    assert via[10] == b"*3\r\n_\r\n$1\r\n1\r\n_\r\n"


def _pipelines(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.incr("{p}n").get("{p}n").rpush("{p}l", i).set(f"other{i}", i)
    replies = pipe.execute()
    assert replies[0::4] == list(range(1, 101))
    assert replies[1::4] == [str(i).encode() for i in range(1, 101)]
    assert replies[2::4] == list(range(1, 101)) and replies[3::4] == [True] * 100
    # Three reads whose replies fit a datagram each but not together: the gateway runs each
    # alone (a read changed nothing, so it may run again).
    r.set("{b}1", "x" * 4000)
    r.set("{b}2", "y" * 4000)
    pipe = r.pipeline(transaction=False)
    pipe.get("{b}1").get("{b}2").get("{b}1")
    assert pipe.execute() == [b"x" * 4000, b"y" * 4000, b"x" * 4000]


async def test_a_pipeline_goes_in_batches_of_one_slot(gateway_and_client) -> None:  # type: ignore[no-untyped-def]
    port, client = gateway_and_client
    await asyncio.to_thread(_pipelines, port)
    # 400 commands, 300 of them of slot {p} in a few reads from the socket; 100 of other
    # slots; then 2 SETs and a batch of 3 GETs answered TOO_LARGE and run one by one.
    assert client.stats.sent < 100 + 40 + 6, client.stats


def _keyspace_wide(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    r.set("s1", "x")
    r.hset("h1", "f", "v")
    r.rpush("l1", *range(30))
    # The agent's own keys (its state, the records of the writes above) are never shown.
    assert sorted(r.keys("*")) == [b"h1", b"l1", b"s1"]
    assert r.dbsize() == 3
    assert r.randomkey() in (b"h1", b"l1", b"s1")
    assert sorted(r.scan_iter(count=2)) == [b"h1", b"l1", b"s1"]
    assert r.config_set("list-max-listpack-size", 4) is True
    assert r.config_get("list-max-listpack-size") == {"list-max-listpack-size": "4"}
    assert r.object("encoding", "l1") == b"quicklist"
    with pytest.raises(redis.ResponseError, match="CONFIG SET dir is not served"):
        r.config_set("dir", "/")
    assert r.config_get("requirepass") == {}
    assert r.function_flush() is True
    assert r.flushall() is True
    assert r.dbsize() == 0 and r.keys("*") == []
    # The agent kept its own keys: it still serves, and a write after the flush is there.
    assert r.set("after", "1") is True and r.keys("*") == [b"after"]


async def test_keyspace_wide_commands_through_the_agent(gateway_and_client, cluster_redis) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway_and_client
    direct = cluster_redis.client()
    try:
        await asyncio.to_thread(_keyspace_wide, port)
        assert direct.exists(b"{__netmigrate__}:agent") == 1
        assert direct.config_get("list-max-listpack-size") == {"list-max-listpack-size": "4"}
    finally:  # the Redis is shared by the session's tests
        direct.config_set("list-max-listpack-size", -2)


def test_the_gateway_needs_users_or_no_auth(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--to", "127.0.0.1:1", "--keyspace", "1"])
    assert "one of the arguments --users --no-auth is required" in capsys.readouterr().err
    args = parser.parse_args(["--to", "127.0.0.1:1", "--keyspace", "1", "--users", "/nonexistent"])
    assert cli.run(args) == 2
    assert "/nonexistent" in capsys.readouterr().err
