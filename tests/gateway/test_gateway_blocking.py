"""Blocking list and sorted-set commands outside MULTI through the gateway, over a real agent
and redis-server: served within their timeout by polling (gateway.blocking), Redis' replies."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import redis
from support.resp_wire import read_replies

from netmigrate.gateway.blocking import MAX_PAUSE
from netmigrate.rediscmd.resp import encode

pytestmark = pytest.mark.redis


def _cmd(*args: bytes) -> bytes:
    return encode(list(args))


def _later(delay: float, action: object) -> threading.Timer:
    t = threading.Timer(delay, action)  # type: ignore[arg-type]
    t.start()
    return t


def _served(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    other = redis.Redis(port=port, protocol=2)
    # Data there already: answered at once, as Redis does.
    r.rpush("{b}l", "a", "b")
    assert r.blpop(["{b}empty", "{b}l"], 1) == (b"{b}l", b"a")
    assert r.brpop(["{b}l"], 1) == (b"{b}l", b"b")
    # Nothing there: the timeout's null, after the timeout.
    start = time.monotonic()
    assert r.blpop(["{b}l"], 0.3) is None
    assert 0.3 <= time.monotonic() - start < 0.3 + 2 * MAX_PAUSE + 0.5
    # A push from another client while it waits (timeout 0: as long as it takes).
    timer = _later(0.4, lambda: other.lpush("{b}l", "pushed"))
    start = time.monotonic()
    assert r.blpop(["{b}l"], 0) == (b"{b}l", b"pushed")
    assert time.monotonic() - start >= 0.4
    timer.join()
    # The moving and multi-pop forms, and sorted sets.
    timer = _later(0.2, lambda: other.rpush("{b}src", "x", "y"))
    assert r.blmove("{b}src", "{b}dst", 5, "LEFT", "RIGHT") == b"x"
    assert r.brpoplpush("{b}src", "{b}dst", 5) == b"y"
    assert r.lrange("{b}dst", 0, -1) == [b"y", b"x"]
    timer.join()
    timer = _later(0.2, lambda: other.rpush("{b}m", "1", "2", "3"))
    assert r.blmpop(5, 2, "{b}n", "{b}m", direction="LEFT", count=2) == [b"{b}m", [b"1", b"2"]]
    timer.join()
    timer = _later(0.2, lambda: other.zadd("{b}z", {"one": 1, "two": 2}))
    assert r.bzpopmin(["{b}z"], 5) == (b"{b}z", b"one", 1.0)
    assert r.bzpopmax(["{b}z"], 5) == (b"{b}z", b"two", 2.0)
    timer.join()
    other.zadd("{b}z", {"a": 1, "b": 2})
    assert r.bzmpop(1, 1, ["{b}z"], min=True) == [b"{b}z", [[b"a", b"1"]]]
    # Redis' own errors at once: a wrong type, a bad timeout, keys of several slots.
    r.set("{b}str", "x")
    start = time.monotonic()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.blpop(["{b}str"], 0)
    assert time.monotonic() - start < 1
    with pytest.raises(redis.ResponseError, match="timeout is negative"):
        r.blpop(["{b}l"], -1)
    with pytest.raises(redis.ResponseError, match="timeout is not a float"):
        r.execute_command("BLPOP", "{b}l", "soon")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        r.blpop(["{a}l", "{c}l"], 1)
    # Still not served: a clear error naming the limit.
    with pytest.raises(redis.ResponseError, match="blocking commands are not served"):
        r.xread({"{b}s": "$"}, block=100)


async def test_blocking_commands_are_served_within_their_timeout(gateway_port) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(_served, gateway_port)


def _connection_waits(port: int) -> None:
    other = redis.Redis(port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # A command pipelined after a blocked one runs after it, as in Redis.
        s.sendall(_cmd(b"BLPOP", b"{q}l", b"0") + _cmd(b"SET", b"{q}after", b"1"))
        time.sleep(0.3)
        assert other.get("{q}after") is None
        other.rpush("{q}l", "v")
        assert read_replies(s, 2) == [b"*2\r\n$4\r\n{q}l\r\n$1\r\nv\r\n", b"+OK\r\n"]
        assert other.get("{q}after") == b"1"
        # RESP3: the timeout's null.
        s.sendall(_cmd(b"HELLO", b"3") + _cmd(b"BRPOP", b"{q}l", b"0.1"))
        assert read_replies(s, 2)[1] == b"_\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_cmd(b"BLPOP", b"{q}gone", b"0"))
        time.sleep(0.2)
    # A client that went away while blocked pops nothing any more.
    time.sleep(0.2)
    other.rpush("{q}gone", "kept")
    time.sleep(3 * MAX_PAUSE)
    assert other.lrange("{q}gone", 0, -1) == [b"kept"]


async def test_a_blocked_connection_waits_and_a_gone_client_stops(gateway_port) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(_connection_waits, gateway_port)
