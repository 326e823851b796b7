"""Scripts and functions (EVAL / EVALSHA / FCALL and their _RO forms) against real Redis.

First the agent's request scripts, which run an application's script inside themselves (Redis
forbids EVAL in a script): what they answer is what a plain redis-server answers to the same
EVAL, byte for byte, in RESP2 and RESP3. Then the whole path: redis-py -> the gateway (which
keeps the bodies and sends EVALSHA and FCALL as EVAL) -> our client -> a real agent -> Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis
from support.resp_wire import raw_replies, raw_values

from netmigrate.agent.generic import GenericCommands
from netmigrate.agent.generic_lua import SCRIPT_LOADS
from netmigrate.client.aio import AsyncClient
from netmigrate.gateway.acl import Acl
from netmigrate.gateway.keyspace import ClientKeyspace
from netmigrate.gateway.scripts import Scripts
from netmigrate.gateway.server import running
from netmigrate.gateway.session import Session
from netmigrate.protocol.constants import HEADER, Op
from netmigrate.rediscmd.table import CommandTable

pytestmark = pytest.mark.redis

KEYS = [b"{t}k", b"{t}h", b"{t}s"]
SETUP = [[b"SET", b"{t}k", b"v"], [b"HSET", b"{t}h", b"f", b"1"], [b"SET", b"{t}s", b"str"]]

#: (read only, body, args): every kind of value a script can return, as Redis converts it.
SCRIPTS: list[tuple[bool, bytes, list[bytes]]] = [
    (True, b"return redis.call('GET', KEYS[1])", []),
    (True, b"return {1, 'two', {3, {ok = 'x'}}, false, true, 3.99, -2.5}", []),
    (True, b"return {1, nil, 3}", []),  # an array ends at its first nil
    (True, b"return redis.call('HGETALL', KEYS[2])", []),
    (True, b"redis.setresp(3); return redis.call('HGETALL', KEYS[2])", []),
    (True, b"redis.setresp(3); return {true, false}", []),
    (True, b"return {double = 1.5}", []),
    (True, b"return {big_number = '12345678901234567890'}", []),
    (True, b"return {verbatim_string = {format = 'txt', string = 'hi'}}", []),
    (True, b"return {map = {a = 1}}", []),
    (True, b"return {set = {x = true}}", []),
    (True, b"return {err = 'MY error'}", []),
    (True, b"return redis.error_reply('X bad')", []),
    (True, b"return redis.status_reply('FINE')", []),
    (True, b"return ARGV", [b"a1", b"a2"]),
    (True, b"return KEYS", []),
    (True, b"return nil", []),
    (True, b"return x.y", []),  # a runtime error: Redis' own text, line and SHA1
    (True, b"return (", []),  # a compile error
    (True, b"#!lua flags=no-writes\nreturn redis.call('EXISTS', KEYS[1])", []),
    (True, b"#!notlua\nreturn 1", []),  # Redis' own shebang errors
    (True, b"#!lua foo=bar\nreturn 1", []),
    (True, b"#!lua flags=no-writes,bad\nreturn 1", []),
    (True, b"return redis.pcall('BLPOP', KEYS[1], 0)", []),  # not allowed in scripts
    (False, b"return redis.call('SET', KEYS[1], ARGV[1])", [b"w"]),
    (False, b"redis.call('HINCRBY', KEYS[2], 'f', 2); return redis.call('HGET', KEYS[2], 'f')", []),
    (False, b"return redis.pcall('INCR', KEYS[3])", []),  # WRONGTYPE inside the array
]


def _through_agent_scripts(port: int, resp: int) -> list[bytes]:
    gc = GenericCommands(CommandTable.shipped(), 10_000)
    calls = []
    for i, (ro, body, args) in enumerate(SCRIPTS):
        command = (b"EVAL_RO" if ro else b"EVAL", body, b"%d" % len(KEYS), *KEYS, *args)
        slot = gc.table.classify(list(command)).slot
        assert slot is not None
        request = gc.check([command], False, not ro, slot, resp)
        if ro:
            calls.append(gc.read_call(request))
        else:
            header = HEADER.pack(1, Op.CMD_WRITE | 0x80, 0, 0, 50000, slot, 0, 0, i)
            calls.append(gc.write_call(request, b"rid:%d:%d" % (resp, i), header, b"{t}dirty"))
    return [a if isinstance(a, bytes) else a[1] for a in raw_values(port, calls)]  # type: ignore[index]


@pytest.mark.parametrize("resp", [2, 3])
def test_a_script_answers_what_redis_answers(redis_server, cluster_redis, resp: int) -> None:  # type: ignore[no-untyped-def]
    plain = redis_server(cluster=False)
    raw_replies(plain.port, SETUP)
    raw_replies(cluster_redis.port, SETUP)
    for call in SCRIPT_LOADS:
        with socket.create_connection(("127.0.0.1", cluster_redis.port)) as s:
            s.sendall(call)
            assert s.recv(100).startswith(b"$40")
    native = raw_replies(
        plain.port,
        [
            [b"HELLO", b"%d" % resp],
            *[
                [b"EVAL_RO" if ro else b"EVAL", body, b"%d" % len(KEYS), *KEYS, *args]
                for ro, body, args in SCRIPTS
            ],
        ],
    )[1:]
    through = _through_agent_scripts(cluster_redis.port, resp)
    for (_, body, _), want, got in zip(SCRIPTS, native, through, strict=True):
        assert got == want, body
    # The writes were marked dirty at their declared keys (a migration target keeps them).
    assert cluster_redis.client().smembers(b"{t}dirty") == set(KEYS)


def test_a_script_touches_only_what_it_declares(cluster_redis) -> None:  # type: ignore[no-untyped-def]
    for call in SCRIPT_LOADS:
        with socket.create_connection(("127.0.0.1", cluster_redis.port)) as s:
            s.sendall(call)
            assert s.recv(100).startswith(b"$40")
    gc = GenericCommands(CommandTable.shipped(), 10_000)

    def run(command: tuple[bytes, ...], write: bool) -> bytes:
        slot = gc.table.classify(list(command)).slot or 0
        request = gc.check([command], False, write, slot)
        if not write:
            return raw_values(cluster_redis.port, [gc.read_call(request)])[0]  # type: ignore[return-value]
        header = HEADER.pack(1, Op.CMD_WRITE | 0x80, 0, 0, 50000, slot, 0, 0, 1)
        reply = raw_values(cluster_redis.port, [gc.write_call(request, b"rid:x", header, None)])
        cluster_redis.client().delete(b"rid:x")
        return reply[0][1]  # type: ignore[index,no-any-return]

    undeclared = run((b"EVAL", b"return redis.call('SET', '{t}other', 1)", b"1", b"{t}k"), True)
    assert undeclared.startswith(b"-ERR NetMigrate: a script may touch only the keys it declares")
    reserved = run((b"EVAL_RO", b"return redis.call('GET', '{__netmigrate__}:agent')", b"0"), False)
    assert b"only the keys it declares" in reserved
    flush = run((b"EVAL", b"return redis.call('FLUSHALL')", b"0"), True)
    assert flush.startswith(b"-ERR NetMigrate: a script may not run a write that names no key")
    # What names no key and writes nothing is served: a script that declares no key runs.
    assert run((b"EVAL_RO", b"return #redis.call('TIME')", b"0"), False) == b":2\r\n"
    assert run((b"EVAL_RO", b"return redis.pcall('SET', KEYS[1], 1)", b"1", b"{t}k"), False) == (
        b"-ERR Write commands are not allowed from read-only scripts.\r\n"
    )
    # Every way to Redis from the body goes through the checks, and none can be changed.
    for body in [
        b"return _G.redis.call('GET', '{t}other')",
        b'return loadstring(\'return redis.call("GET", "{t}other")\')()',
        b"return load(function() return nil end) and redis.call('GET', '{t}other')",
    ]:
        assert b"only the keys it declares" in run((b"EVAL", body, b"1", b"{t}k"), True), body
    for body in [b"redis.call = function() end", b"_G.x = 1", b"getmetatable(redis).x = 1"]:
        reply = run((b"EVAL", body, b"1", b"{t}k"), True)
        assert b"readonly table" in reply or b"attempt to index" in reply, (body, reply)
    # A no-writes script may not write, as in Redis; a negative key count is Redis' error.
    nowrites = b"#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 1)"
    assert run((b"EVAL", nowrites, b"1", b"{t}k"), True).startswith(
        b"-ERR Write commands are not allowed from read-only scripts."
    )
    negative = run((b"EVAL", b"return 1", b"-1"), True)
    assert negative == b"-ERR Number of keys can't be negative\r\n"
    assert cluster_redis.client().exists(b"{t}other") == 0
    assert cluster_redis.client().get(b"{t}k") is None


@pytest_asyncio.fixture
async def gateway(cluster_redis, agent_factory) -> AsyncIterator[tuple[int, Scripts]]:  # type: ignore[no-untyped-def]
    agent = await agent_factory(cluster_redis)
    table = CommandTable.shipped()
    scripts = Scripts()
    async with AsyncClient(
        agent.address, 50000, command_table=table, max_datagram=9000 - 28
    ) as client:
        keyspace = ClientKeyspace(client, [agent.address])
        async with running(
            lambda: Session(keyspace, table, Acl.no_auth(), scripts=scripts)
        ) as server:
            yield server.sockets[0].getsockname()[1], scripts


LIBRARY = """#!lua name=lib
redis.register_function('add', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
redis.register_function{function_name = 'peek', callback = function(keys)
  return redis.call('GET', keys[1])
end, flags = {'no-writes'}}
"""


def _scripts_through_the_gateway(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    # redis-py's Script: EVALSHA first, EVAL after NOSCRIPT, EVALSHA from then on.
    add2 = r.register_script(
        "redis.call('INCR', KEYS[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])"
    )
    assert add2(keys=["{s}a", "{s}b"], args=[5]) == 5
    assert add2(keys=["{s}a", "{s}b"], args=[5]) == 10
    body = "return redis.call('GET', KEYS[1])"
    sha = r.script_load(body)
    assert sha == hashlib.sha1(body.encode()).hexdigest()
    assert r.script_exists(sha, "0" * 40) == [True, False]
    assert r.evalsha(sha, 1, "{s}a") == b"2"
    assert r.evalsha_ro(sha.upper(), 1, "{s}b") == b"10"
    assert r.eval_ro(body, 1, "{s}a") == b"2"
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha("f" * 40, 0)
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        r.eval("return 1", 2, "a", "b")
    with pytest.raises(redis.ResponseError, match="only the keys it declares"):
        r.eval("return redis.call('GET', 'x')", 0)
    with pytest.raises(redis.ResponseError, match="Write commands are not allowed"):
        r.eval_ro("return redis.call('SET', KEYS[1], 1)", 1, "{s}a")
    assert r.eval("return 'keyless'", 0) == b"keyless"
    # In a transaction: EVALSHA runs as the EVAL of its body, atomically with the rest.
    pipe = r.pipeline(transaction=True)
    pipe.evalsha(sha, 1, "{s}a").incr("{s}a").eval(body, 1, "{s}a")
    assert pipe.execute() == [b"2", 3, b"3"]
    # Pipelined EVALs of one slot go as one batch; replies in order.
    pipe = r.pipeline(transaction=False)
    for _ in range(10):
        pipe.eval("return redis.call('INCR', KEYS[1])", 1, "{s}n")
    assert pipe.execute() == list(range(1, 11))
    assert r.script_flush() is True
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha(sha, 1, "{s}a")
    # RESP3: the script's double is a double.
    assert redis.Redis(port=port, protocol=3).eval("return {double = 1.5}", 1, "{s}a") == 1.5

    assert r.function_load(LIBRARY) == b"lib"
    with pytest.raises(redis.ResponseError, match="Library 'lib' already exists"):
        r.function_load(LIBRARY)
    assert r.function_load(LIBRARY, replace=True) == b"lib"
    assert r.fcall("add", 1, "{s}c", 3) == 3
    assert r.fcall("add", 1, "{s}c", 4) == 7
    assert r.fcall_ro("peek", 1, "{s}c") == b"7"
    with pytest.raises(redis.ResponseError, match="write flag"):
        r.fcall_ro("add", 1, "{s}c", 1)
    with pytest.raises(redis.ResponseError, match="Function not found"):
        r.fcall("nope", 0)
    listed = r.function_list()
    assert [lib[1] for lib in listed] == [b"lib"]
    assert b"peek" in repr(listed).encode() and b"no-writes" in repr(listed).encode()
    with pytest.raises(redis.ResponseError, match="Error compiling"):
        r.function_load("#!lua name=bad\nredis.register_function('x', function() end")
    with pytest.raises(redis.ResponseError, match="No functions registered"):
        r.function_load("#!lua name=empty\nlocal x = 1")
    with pytest.raises(redis.ResponseError, match="Library name was not given"):
        r.function_load("#!lua\nredis.register_function('x', function() return 1 end)")
    assert r.function_delete("lib") is True
    with pytest.raises(redis.ResponseError, match="Function not found"):
        r.fcall("add", 1, "{s}c", 1)


async def test_scripts_and_functions_through_the_gateway(gateway, cluster_redis) -> None:  # type: ignore[no-untyped-def]
    port, scripts = gateway
    await asyncio.to_thread(_scripts_through_the_gateway, port)
    direct = cluster_redis.client()
    assert direct.get("{s}a") == b"3" and direct.get("{s}b") == b"10"
    assert direct.get("{s}c") == b"7" and direct.get("{s}n") == b"10"
    # The bodies live in the gateway, not in Redis' own script cache or functions.
    double = b"return {double = 1.5}"
    assert scripts.body(hashlib.sha1(double).hexdigest().encode()) == double
    assert direct.script_exists(hashlib.sha1(double).hexdigest()) == [False]
    assert direct.function_list() == []
