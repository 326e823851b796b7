"""WATCH / UNWATCH / MULTI / EXEC through the gateway, over a real agent and redis-server.

The gateway reads the watched keys' fingerprints at WATCH and EXEC sends them with the
transaction, checked in the agent's write script (rediscmd.watch): a write between WATCH and
EXEC aborts EXEC with Redis' null reply; nothing else does.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import redis
from support.resp_wire import read_replies

pytestmark = pytest.mark.redis


def _raw(port: int, payload: bytes, replies: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        return read_replies(s, replies)


def _cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _watch_semantics(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    other = redis.Redis(port=port, protocol=2)
    r.set("{w}k", 1)

    # No conflict: the transaction commits.
    with r.pipeline() as pipe:
        pipe.watch("{w}k")
        value = int(pipe.get("{w}k"))
        pipe.multi()
        pipe.set("{w}k", value + 1)
        assert pipe.execute() == [True]
    assert r.get("{w}k") == b"2"

    # A write between WATCH and EXEC: EXEC answers null and nothing ran.
    with r.pipeline() as pipe:
        pipe.watch("{w}k")
        other.set("{w}k", 10)
        pipe.multi()
        pipe.set("{w}k", 99).incr("{w}other")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get("{w}k") == b"10" and r.get("{w}other") is None

    # An expiry set on the key is a change too; so is a deletion, and a key created.
    for change in (
        lambda: other.expire("{w}k", 100),
        lambda: other.delete("{w}k"),
        lambda: other.set("{w}k", "back"),
    ):
        with r.pipeline() as pipe:
            pipe.watch("{w}k", "{w}other")
            change()
            pipe.multi()
            pipe.set("{w}other", 1)
            with pytest.raises(redis.WatchError):
                pipe.execute()
    assert r.get("{w}other") is None

    # The documented difference: a write that leaves value and TTL as they were is not seen.
    with r.pipeline() as pipe:
        pipe.watch("{w}k")
        other.set("{w}k", "back")
        pipe.multi()
        pipe.set("{w}other", 1)
        assert pipe.execute() == [True]

    # UNWATCH forgets the watched keys, and so does DISCARD.
    for forget in (_cmd(b"UNWATCH"), _cmd(b"MULTI") + _cmd(b"DISCARD")):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(_cmd(b"WATCH", b"{w}k"))
            assert read_replies(s, 1) == [b"+OK\r\n"]
            other.set("{w}k", "changed")
            s.sendall(forget)
            read_replies(s, forget.count(b"*1\r\n"))
            s.sendall(_cmd(b"MULTI") + _cmd(b"SET", b"{w}k", b"mine") + _cmd(b"EXEC"))
            assert read_replies(s, 3)[-1] == b"*1\r\n+OK\r\n"
    assert r.get("{w}k") == b"mine"

    # Watched keys and the transaction's keys in one slot, as Redis Cluster asks.
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        r.execute_command("WATCH", "{a}x", "{b}y")
    with r.pipeline() as pipe:
        pipe.watch("{a}x")
        pipe.multi()
        pipe.set("{b}y", 1)
        with pytest.raises(redis.ResponseError, match="hash to the same slot"):
            pipe.execute()
    assert r.get("{b}y") is None


async def test_watch_aborts_on_a_conflict_and_commits_without(gateway_port, cluster_redis) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(_watch_semantics, gateway_port)
    # Nothing of the gateway's bookkeeping is left in Redis beyond the agent's own keys.
    direct = cluster_redis.client()
    assert direct.get("{w}k") == b"mine"


def _raw_replies_of_exec(port: int) -> None:
    other = redis.Redis(port=port)
    for hello, null in ((b"", b"*-1\r\n"), (_cmd(b"HELLO", b"3"), b"_\r\n")):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            n = 1 if hello else 0
            s.sendall(hello + _cmd(b"WATCH", b"{r}k"))
            assert read_replies(s, n + 1)[-1] == b"+OK\r\n"
            other.incr("{r}k")
            # An empty transaction answers null too when a watched key changed.
            s.sendall(_cmd(b"MULTI") + _cmd(b"EXEC"))
            assert read_replies(s, 2) == [b"+OK\r\n", null]
            s.sendall(_cmd(b"WATCH", b"{r}k") + _cmd(b"MULTI") + _cmd(b"EXEC"))
            assert read_replies(s, 3) == [b"+OK\r\n", b"+OK\r\n", b"*0\r\n"]
    # A WATCH pipelined with its transaction: EXEC waits for the fingerprints.
    replies = _raw(
        port,
        _cmd(b"WATCH", b"{r}k") + _cmd(b"MULTI") + _cmd(b"INCR", b"{r}k") + _cmd(b"EXEC"),
        4,
    )
    assert replies == [b"+OK\r\n", b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n:3\r\n"]


async def test_exec_null_reply_in_resp2_and_resp3(gateway_port) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(_raw_replies_of_exec, gateway_port)


def _cas_increments(port: int, key: str, times: int, retries: list[int]) -> None:
    r = redis.Redis(port=port, protocol=2)

    def incr(pipe: redis.client.Pipeline) -> None:
        value = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, value + 1)

    for _ in range(times):
        # redis-py's optimistic-locking loop: WATCH, read, MULTI, EXEC, again on WatchError.
        while True:
            try:
                with r.pipeline() as pipe:
                    pipe.watch(key)
                    incr(pipe)
                    pipe.execute()
                break
            except redis.WatchError:
                retries.append(1)


async def test_concurrent_cas_increments_end_at_the_exact_total(
    gateway_port, cluster_redis
) -> None:  # type: ignore[no-untyped-def]
    clients, times = 4, 40
    retries: list[int] = []
    threads = [
        threading.Thread(target=_cas_increments, args=(gateway_port, "{c}n", times, retries))
        for _ in range(clients)
    ]
    await asyncio.to_thread(lambda: [t.start() for t in threads])
    await asyncio.to_thread(lambda: [t.join(60) for t in threads])
    assert not any(t.is_alive() for t in threads)
    assert cluster_redis.client().get("{c}n") == b"%d" % (clients * times)
    # The clients did race: some EXECs aborted and were retried (else the test shows nothing).
    assert retries
