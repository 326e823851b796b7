"""The gateway's RESP server with unmodified clients (redis-py, redis-cli): the connection's own
commands, pipelining in order, transactions of one slot, Redis' errors and the limits named.

The keyspace behind it here is one real redis-server reached directly (a stand-in for the
switch path, which tests/gateway/test_gateway_lab.py covers): what is tested is the gateway.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.resp_wire import split_replies

from netmigrate.gateway.acl import Acl, user_line
from netmigrate.gateway.server import running
from netmigrate.gateway.session import Session
from netmigrate.rediscmd.resp import encode
from netmigrate.rediscmd.table import Classified, CommandTable

pytestmark = pytest.mark.redis


class DirectKeyspace:
    """Commands straight to one Redis, on a connection of the client's RESP version."""

    protocols = frozenset({2, 3})

    def __init__(self, port: int) -> None:
        self.port = port
        self._conns: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._lock = asyncio.Lock()
        self.sent: list[list[bytes]] = []

    async def _call(self, resp: int, *commands: Sequence[bytes]) -> list[bytes]:
        async with self._lock:
            if resp not in self._conns:
                self._conns[resp] = await asyncio.open_connection("127.0.0.1", self.port)
                await self._roundtrip(resp, [[b"HELLO", str(resp).encode()]])
            return await self._roundtrip(resp, commands)

    async def _roundtrip(self, resp: int, commands: Sequence[Sequence[bytes]]) -> list[bytes]:
        reader, writer = self._conns[resp]
        writer.write(b"".join(encode(list(c)) for c in commands))
        data, out = b"", []
        while len(out) < len(commands):
            data += await reader.read(65536)
            got, data = split_replies(data)
            out += got
        return out

    async def batch(
        self, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> list[bytes]:
        self.sent.extend(list(a) for _, a in requests)
        return await self._call(resp, *(a for _, a in requests))

    async def transaction(self, slot, requests, resp):  # type: ignore[no-untyped-def]
        replies = await self._call(resp, [b"MULTI"], *(a for _, a in requests), [b"EXEC"])
        return replies[-1]

    def close(self) -> None:
        for _, w in self._conns.values():
            w.close()


@pytest.fixture
def gateway(redis_server) -> Iterator[tuple[int, DirectKeyspace]]:  # type: ignore[no-untyped-def]
    """A gateway on a free port, run by an event loop in a thread (clients here are sync)."""
    server = redis_server(cluster=False)
    acl = Acl({"app": __import__("hashlib").sha256(b"s3cret").hexdigest()})
    table = CommandTable.shipped()
    loop = asyncio.new_event_loop()
    ready: list[tuple[int, DirectKeyspace]] = []
    stop = asyncio.Event()

    async def main() -> None:
        keyspace = DirectKeyspace(server.port)
        async with running(lambda: Session(keyspace, table, acl)) as srv:
            ready.append((srv.sockets[0].getsockname()[1], keyspace))
            await stop.wait()
        keyspace.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    while not ready:
        thread.join(0.01)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


def test_auth_is_required_and_checked(gateway) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway
    # redis-py retries a failed authentication with back-off by default (seconds): not here.
    once = Retry(NoBackoff(), 0)
    with pytest.raises(redis.AuthenticationError, match="HELLO must be called"):
        redis.Redis(port=port, retry=once, protocol=3).get("k")
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        redis.Redis(port=port, username="app", password="wrong", retry=once).ping()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n")
        want = b"-NOAUTH Authentication required.\r\n" * 2
        got = b""
        while len(got) < len(want):
            got += s.recv(100)
        assert got == want
    app = redis.Redis(port=port, username="app", password="s3cret")
    assert app.ping() is True
    assert app.set("k", "v") is True and app.get("k") == b"v"


def _every_type(r: redis.Redis) -> list[object]:
    r.delete("{t}h", "{t}l", "{t}s", "{t}z", "{t}n")
    return [
        r.hset("{t}h", mapping={"f": "1", "g": "2"}),
        r.hgetall("{t}h"),
        r.expire("{t}h", 100),
        r.ttl("{t}h") > 0,
        r.lpush("{t}l", "a", "b"),
        r.lrange("{t}l", 0, -1),
        r.sadd("{t}s", "x", "y"),
        sorted(r.smembers("{t}s")),
        r.zadd("{t}z", {"m": 1.5, "n": 0.1}),
        r.zscore("{t}z", "m"),
        r.zrange("{t}z", 0, -1, withscores=True),
        r.zincrby("{t}z", 0.2, "n"),
        r.incrby("{t}n", 5),
        r.type("{t}h"),
        r.object("encoding", "{t}l"),
        r.getdel("{t}n"),
        r.get("{t}n"),
    ]


def test_every_type_through_redis_py_as_redis_answers(gateway) -> None:  # type: ignore[no-untyped-def]
    port, keyspace = gateway
    for protocol in (2, 3):
        direct = redis.Redis(port=keyspace.port, protocol=protocol)
        via = redis.Redis(port=port, username="app", password="s3cret", protocol=protocol)
        assert _every_type(via) == _every_type(direct), protocol


def test_pipelined_replies_come_in_request_order(gateway) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway
    r = redis.Redis(port=port, username="app", password="s3cret")
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"p{i}", i)
        pipe.get(f"p{i}")
    replies = pipe.execute()
    assert replies[1::2] == [str(i).encode() for i in range(200)]


def test_transactions_of_one_slot(gateway) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway
    r = redis.Redis(port=port, username="app", password="s3cret")
    pipe = r.pipeline(transaction=True)
    pipe.hset("{t}h", "f", "1").hincrby("{t}h", "f", 2).hget("{t}h", "f")
    assert pipe.execute() == [1, 3, b"3"]
    pipe = r.pipeline(transaction=True)
    pipe.set("{a}k", 1).set("{b}k", 2)
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        pipe.execute()


def test_redis_errors_and_named_limits(gateway) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway
    r = redis.Redis(port=port, username="app", password="s3cret")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        r.mget("a", "b")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        r.execute_command("NOPE")
    with pytest.raises(redis.ResponseError, match="blocking commands are not served"):
        r.xread({"s": "0"}, block=100)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.set("str", "x")
        r.lpush("str", "y")
    assert r.select(0) if hasattr(r, "select") else True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)


def test_redis_cli_and_a_protocol_error(gateway) -> None:  # type: ignore[no-untyped-def]
    port, _ = gateway
    base = ["redis-cli", "-p", str(port), "--user", "app", "--pass", "s3cret", "--no-auth-warning"]
    out = subprocess.run([*base, "SET", "cli", "hello"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "OK"
    out = subprocess.run([*base, "GET", "cli"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"*1\r\n+PING\r\n")
        assert s.recv(100).startswith(b"-ERR Protocol error: expected '$'")
        assert s.recv(100) == b""  # and the connection is closed, as Redis does


def test_users_file_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "users"
    path.write_text(f"# gateway users\n{user_line('app', 'pw')}\n")
    acl = Acl.from_file(path)
    assert acl.check("app", b"pw") == "app" and acl.check("app", b"no") is None
    assert acl.check("nobody", b"pw") is None and acl.default_user() is None
    path.write_text("user app pw\n")
    with pytest.raises(ValueError, match="expected 'user NAME #SHA256HEX'"):
        Acl.from_file(path)
