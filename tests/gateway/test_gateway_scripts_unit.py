"""The gateway's scripts and functions without a keyspace: what EVALSHA and FCALL are sent as,
how each is classified and routed, and Redis' own errors for what is not there."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from netmigrate.gateway.acl import Acl
from netmigrate.gateway.scripts import (
    MAX_EVAL_BODIES,
    NOSCRIPT,
    LibraryMeta,
    ScriptError,
    Scripts,
    call_source,
    lua_string,
)
from netmigrate.gateway.session import Session
from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd.table import Classified, CommandTable, Kind

BODY = b"return redis.call('GET', KEYS[1])"
SHA = hashlib.sha1(BODY).hexdigest().encode()


def test_script_load_answers_redis_sha1_and_evalsha_becomes_eval_of_the_body() -> None:
    s = Scripts()
    assert s.script_command([b"SCRIPT", b"LOAD", BODY]) == SHA
    assert s.script_command([b"SCRIPT", b"EXISTS", SHA, b"0" * 40]) == [1, 0]
    evalsha = [b"EVALSHA", SHA.upper(), b"1", b"k", b"a"]
    assert s.as_eval(evalsha) == [b"EVAL", BODY, b"1", b"k", b"a"]
    assert s.as_eval([b"EVALSHA_RO", SHA, b"1", b"k"]) == [b"EVAL_RO", BODY, b"1", b"k"]
    for unknown in (b"f" * 40, b"short"):
        with pytest.raises(ScriptError) as info:
            s.as_eval([b"EVALSHA", unknown, b"0"])
        assert info.value.message == NOSCRIPT
    s.script_command([b"SCRIPT", b"FLUSH"])
    with pytest.raises(ScriptError, match="NOSCRIPT"):
        s.as_eval([b"EVALSHA", SHA, b"0"])


def test_a_script_that_does_not_write_is_sent_as_a_read() -> None:
    s = Scripts()
    body = b"#!lua flags=allow-oom,no-writes\nreturn redis.call('GET', KEYS[1])"
    assert s.as_eval([b"EVAL", body, b"1", b"k"])[0] == b"EVAL_RO"
    sha = hashlib.sha1(body).hexdigest().encode()
    assert s.as_eval([b"EVALSHA", sha, b"1", b"k"])[0] == b"EVAL_RO"
    assert s.as_eval([b"EVAL", b"#!lua\nreturn 1", b"0"])[0] == b"EVAL"
    assert s.as_eval([b"EVAL", b"-- flags=no-writes\nreturn 1", b"0"])[0] == b"EVAL"
    session = Session(Recording(), CommandTable.shipped(), Acl.no_auth(), scripts=s)
    assert session.route([b"EVAL", body, b"1", b"k"]) is None  # dispatch sends the EVAL_RO


def test_eval_bodies_are_kept_and_bounded() -> None:
    s = Scripts()
    assert s.as_eval([b"EVAL", BODY, b"0"]) == [b"EVAL", BODY, b"0"]
    assert s.body(SHA) == BODY
    loaded = s.script_command([b"SCRIPT", b"LOAD", b"return 0"])
    for i in range(MAX_EVAL_BODIES):
        s.remember(b"return %d" % (i + 1))
    assert s.body(SHA) is None  # the oldest EVAL body went
    assert s.body(loaded) == b"return 0"  # SCRIPT LOAD's stay


def test_function_load_checks_the_shebang_as_redis_does() -> None:
    s = Scripts()
    cases = [
        (b"redis.register_function('f', g)", "Missing library metadata"),
        (b"#!js name=x\n", "Engine 'js' not found"),
        (b"#!lua\n", "Library name was not given"),
        (b"#!lua name=a-b\n", "Library names can only contain"),
        (b"#!lua name=x foo=1\n", "Invalid metadata value given: foo=1"),
    ]
    for code, message in cases:
        with pytest.raises(ScriptError, match=message):
            s.function_meta([b"FUNCTION", b"LOAD", code])
    meta = s.function_meta([b"FUNCTION", b"LOAD", b"REPLACE", b"#!lua name=lib\n"])
    assert meta == LibraryMeta(b"lib", b"#!lua name=lib\n", True)


def test_a_loaded_library_names_its_functions_and_fcall_becomes_eval() -> None:
    s = Scripts()
    code = b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"
    meta = s.function_meta([b"FUNCTION", b"LOAD", code])
    # What the keyspace's run of the code registered: per function, its name and flags.
    registered = b"*2\r\n*1\r\n$1\r\nf\r\n*2\r\n$1\r\ng\r\n$9\r\nno-writes\r\n"
    assert s.function_loaded(meta, registered) == b"lib"
    assert s.as_eval([b"FCALL", b"f", b"1", b"k", b"a"]) == [
        b"EVAL",
        call_source(code, b"f"),
        b"1",
        b"k",
        b"a",
    ]
    assert s.as_eval([b"FCALL_RO", b"g", b"0"])[0] == b"EVAL_RO"
    assert s.as_eval([b"FCALL", b"g", b"0"])[0] == b"EVAL_RO"  # no-writes: a read
    with pytest.raises(ScriptError, match="write flag"):
        s.as_eval([b"FCALL_RO", b"f", b"0"])
    with pytest.raises(ScriptError, match="Function not found"):
        s.as_eval([b"FCALL", b"h", b"0"])
    with pytest.raises(ScriptError, match="Library 'lib' already exists"):
        s.function_meta([b"FUNCTION", b"LOAD", code])
    # A function name of another library, and the errors Redis' Lua gave.
    other = s.function_meta([b"FUNCTION", b"LOAD", b"#!lua name=other\n"])
    with pytest.raises(ScriptError, match="Function f already exists"):
        s.function_loaded(other, b"*1\r\n*1\r\n$1\r\nf\r\n")
    with pytest.raises(ScriptError, match="Error compiling"):
        s.function_loaded(other, b"-ERR Error compiling script (new function): x\r\n")
    with pytest.raises(ScriptError, match="No functions registered"):
        s.function_loaded(other, b"*0\r\n")
    with pytest.raises(ScriptError, match="Unknown flag given: bad"):
        s.function_loaded(other, b"*1\r\n*2\r\n$1\r\nz\r\n$3\r\nbad\r\n")
    assert s.function_command([b"FUNCTION", b"DELETE", b"lib"]) is not None
    with pytest.raises(ScriptError, match="Function not found"):
        s.as_eval([b"FCALL", b"f", b"0"])
    with pytest.raises(ScriptError, match="Library not found"):
        s.function_command([b"FUNCTION", b"DELETE", b"lib"])


def test_a_function_name_is_quoted_for_lua_whatever_its_bytes() -> None:
    assert lua_string(b"ab_1") == b'"ab_1"'
    assert lua_string(b'a"\\\n]]') == b'"a\\34\\92\\10\\93\\93"'


class Recording:
    """A keyspace that records what it was sent and answers +OK to each."""

    protocols = frozenset({2, 3})

    def __init__(self) -> None:
        self.sent: list[tuple[Classified, list[bytes]]] = []
        self.transactions: list[list[list[bytes]]] = []

    def batch(self, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int):  # type: ignore[no-untyped-def]
        self.sent.extend((c, list(a)) for c, a in requests)
        return _done([b"+OK\r\n"] * len(requests))

    def transaction(self, slot, requests, resp):  # type: ignore[no-untyped-def]
        self.transactions.append([list(a) for _, a in requests])
        return _done(b"*0\r\n")

    def wide(self, args, resp):  # type: ignore[no-untyped-def]
        return _done(b"+OK\r\n")


async def _done(value):  # type: ignore[no-untyped-def]
    return value


async def test_the_session_routes_scripts_by_their_declared_keys() -> None:
    keyspace = Recording()
    scripts = Scripts()
    session = Session(keyspace, CommandTable.shipped(), Acl.no_auth(), scripts=scripts)
    # EVAL goes as it is (batched with its neighbours of the slot) and its body is kept.
    routed = session.route([b"EVAL", BODY, b"1", b"{u}k"])
    assert routed is not None and routed.kind is Kind.WRITE and routed.slot == key_slot(b"u")
    assert scripts.body(SHA) == BODY
    # EVALSHA_RO: the session sends the EVAL_RO of the body, a read of the keys' slot.
    assert session.route([b"EVALSHA_RO", SHA, b"1", b"{u}k"]) is None
    assert await session.execute([b"EVALSHA_RO", SHA, b"1", b"{u}k"]) == b"+OK\r\n"
    c, args = keyspace.sent[-1]
    assert args == [b"EVAL_RO", BODY, b"1", b"{u}k"]
    assert (c.kind, c.slot) == (Kind.READ, key_slot(b"u"))
    unknown = await session.execute([b"EVALSHA", b"0" * 40, b"0"])
    assert unknown == b"-" + NOSCRIPT.encode() + b"\r\n"
    # In a transaction too; an unknown SHA1 fails the transaction.
    await session.execute([b"MULTI"])
    assert await session.execute([b"EVALSHA", SHA, b"1", b"{u}k"]) == b"+QUEUED\r\n"
    await session.execute([b"EXEC"])
    assert keyspace.transactions[-1] == [[b"EVAL", BODY, b"1", b"{u}k"]]
    await session.execute([b"MULTI"])
    assert (await session.execute([b"EVALSHA", b"1" * 40, b"0"])).startswith(b"-NOSCRIPT")
    assert (await session.execute([b"EXEC"])).startswith(b"-EXECABORT")
    # SCRIPT is the gateway's own: nothing is sent.
    sent = len(keyspace.sent)
    assert await session.execute([b"SCRIPT", b"LOAD", b"return 2"]) == (
        b"$40\r\n" + hashlib.sha1(b"return 2").hexdigest().encode() + b"\r\n"
    )
    assert await session.execute([b"SCRIPT", b"FLUSH"]) == b"+OK\r\n"
    killed = await session.execute([b"SCRIPT", b"KILL"])
    assert killed == b"-NOTBUSY No scripts in execution right now.\r\n"
    assert len(keyspace.sent) == sent


async def test_function_load_runs_the_code_once_in_the_keyspace() -> None:
    keyspace = Recording()
    session = Session(keyspace, CommandTable.shipped(), Acl.no_auth())
    code = b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"
    reply = session.dispatch([b"FUNCTION", b"LOAD", code])
    assert not isinstance(reply, bytes)
    # The recording keyspace answers +OK, not what the code registered: Redis' error text.
    assert (await reply).startswith(b"-ERR")  # type: ignore[misc]
    c, args = keyspace.sent[-1]
    assert args[0] == b"EVAL_RO" and args[2] == b"0" and code.split(b"\n", 1)[1] in args[1]
    assert (c.kind, c.slot) == (Kind.KEYLESS, None)
    # FUNCTION FLUSH: the gateway's libraries, and every server's functions.
    meta = session.scripts.function_meta([b"FUNCTION", b"LOAD", code])
    session.scripts.function_loaded(meta, b"*1\r\n*1\r\n$1\r\nf\r\n")
    assert await session.execute([b"FUNCTION", b"FLUSH"]) == b"+OK\r\n"
    with pytest.raises(ScriptError, match="Function not found"):
        session.scripts.as_eval([b"FCALL", b"f", b"0"])
