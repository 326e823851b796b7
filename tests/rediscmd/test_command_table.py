"""The command table against a real redis-server: keys found from key specs equal what
``COMMAND GETKEYSANDFLAGS`` answers, the shipped table equals what ``COMMAND`` says, and
classification (read / write / keyless / unsupported, CROSSSLOT) follows Redis' own flags."""

from __future__ import annotations

import pytest
import redis

from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd.table import CommandError, CommandTable, Kind, in_transaction

pytestmark = pytest.mark.redis

# Requests over every data type and every way a key spec finds keys: an index, a range to the
# end (MSET, DEL), a step (MSET pairs), a key count (ZUNIONSTORE, LMPOP, EVAL), a keyword
# searched forward (XREAD ... STREAMS) or backward, a subcommand (OBJECT ENCODING).
REQUESTS: list[list[str]] = [
    ["GET", "{a}1"],
    ["SET", "{a}1", "v", "EX", "10", "GET"],
    ["MSET", "{a}1", "x", "{a}2", "y", "{a}3", "z"],
    ["MGET", "{a}1", "{a}2"],
    ["DEL", "{a}1", "{a}2", "{a}3"],
    ["UNLINK", "{a}1"],
    ["INCRBY", "{a}1", "5"],
    ["APPEND", "{a}1", "x"],
    ["GETDEL", "{a}1"],
    ["GETEX", "{a}1", "PERSIST"],
    ["SETRANGE", "{a}1", "2", "xx"],
    ["EXPIRE", "{a}1", "10"],
    ["PERSIST", "{a}1"],
    ["TTL", "{a}1"],
    ["TYPE", "{a}1"],
    ["EXISTS", "{a}1", "{a}2"],
    ["RENAME", "{a}1", "{a}2"],
    ["COPY", "{a}1", "{a}2", "REPLACE"],
    ["HSET", "{a}h", "f", "v", "g", "w"],
    ["HGETALL", "{a}h"],
    ["HINCRBY", "{a}h", "f", "1"],
    ["LPUSH", "{a}l", "1", "2"],
    ["LRANGE", "{a}l", "0", "-1"],
    ["LMOVE", "{a}l", "{a}m", "LEFT", "RIGHT"],
    ["LMPOP", "2", "{a}l", "{a}m", "LEFT", "COUNT", "2"],
    ["SADD", "{a}s", "x"],
    ["SINTERSTORE", "{a}d", "{a}s", "{a}t"],
    ["SINTERCARD", "2", "{a}s", "{a}t", "LIMIT", "1"],
    ["ZADD", "{a}z", "1", "m"],
    ["ZINCRBY", "{a}z", "1", "m"],
    ["ZUNIONSTORE", "{a}d", "2", "{a}z", "{a}y", "WEIGHTS", "1", "2"],
    ["ZRANGESTORE", "{a}d", "{a}z", "0", "-1"],
    ["XADD", "{a}x", "*", "f", "v"],
    ["XREAD", "COUNT", "2", "STREAMS", "{a}x", "{a}y", "0", "0"],
    ["PFADD", "{a}p", "a", "b"],
    ["PFMERGE", "{a}d", "{a}p", "{a}q"],
    ["SETBIT", "{a}b", "7", "1"],
    ["BITOP", "AND", "{a}d", "{a}b", "{a}c"],
    ["GEOADD", "{a}g", "13.3", "38.1", "p"],
    ["OBJECT", "ENCODING", "{a}1"],
    ["EVAL", "return 1", "2", "{a}1", "{a}2", "arg"],
    ["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "{a}1"],
]


@pytest.fixture(scope="module")
def server(redis_server_session):  # type: ignore[no-untyped-def]
    return redis_server_session(cluster=False)


@pytest.fixture(scope="module")
def live_table(server) -> CommandTable:  # type: ignore[no-untyped-def]
    conn = redis.Connection(port=server.port)
    try:
        conn.send_command("COMMAND")
        reply = conn.read_response()
    finally:
        conn.disconnect()
    return CommandTable.from_command_reply(reply, "live")


def oracle(server, args: list[str]) -> list[tuple[bytes, frozenset[str]]]:  # type: ignore[no-untyped-def]
    conn = redis.Connection(port=server.port)
    try:
        conn.send_command("COMMAND", "GETKEYSANDFLAGS", *args)
        reply = conn.read_response()
    finally:
        conn.disconnect()
    return [(k, frozenset(f.decode() for f in flags)) for k, flags in reply]


@pytest.mark.parametrize("args", REQUESTS, ids=lambda a: " ".join(a[:2]))
def test_keys_and_flags_equal_redis_own(server, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    table = CommandTable.shipped()
    argv = [a.encode() for a in args]
    spec = table.lookup(argv)
    refs = table.key_refs(spec, argv)
    theirs = oracle(server, args)
    assert [argv[r.index] for r in refs] == [k for k, _ in theirs]
    for ref, (_, flags) in zip(refs, theirs, strict=True):
        if "variable_flags" in ref.flags:
            # Redis narrows these per request in C (SET without GET is OW); the spec's flags
            # are the widest case, so a target pulls whenever Redis would read the key.
            assert ref.needs_old_value or not (flags & {"RW", "RO"})
        else:
            assert ref.flags == flags


def test_the_shipped_table_is_what_redis_says(live_table: CommandTable) -> None:
    shipped = CommandTable.shipped()
    assert len(shipped) == len(live_table) > 200
    assert shipped.to_json().replace(shipped.redis_version, "live") == live_table.to_json()


def test_classification_follows_redis_flags() -> None:
    table = CommandTable.shipped()

    def kind(*args: str) -> Kind:
        return table.classify([a.encode() for a in args]).kind

    assert kind("GET", "k") is Kind.READ
    assert kind("HGETALL", "h") is Kind.READ
    assert kind("ZRANGE", "z", "0", "-1") is Kind.READ
    assert kind("SET", "k", "v") is Kind.WRITE
    assert kind("HSET", "h", "f", "v") is Kind.WRITE
    assert kind("LPUSH", "l", "x") is Kind.WRITE
    assert kind("EVAL", "return 1", "1", "k") is Kind.WRITE
    assert kind("ECHO", "hi") is Kind.KEYLESS
    assert kind("BLPOP", "l", "0") is Kind.UNSUPPORTED
    assert kind("SWAPDB", "0", "1") is Kind.UNSUPPORTED
    keys = table.classify([b"KEYS", b"*"])
    assert keys.kind is Kind.FANOUT and keys.request_policy == "all_shards"
    dbsize = table.classify([b"DBSIZE"])
    assert dbsize.kind is Kind.FANOUT and dbsize.response_policy == "agg_sum"
    assert kind("SUBSCRIBE", "c") is Kind.UNSUPPORTED


def test_scripts_are_writes_or_reads_of_their_declared_keys() -> None:
    table = CommandTable.shipped()
    for name, kind in [
        ("EVAL", Kind.WRITE),
        ("EVALSHA", Kind.WRITE),
        ("FCALL", Kind.WRITE),
        ("EVAL_RO", Kind.READ),
        ("EVALSHA_RO", Kind.READ),
        ("FCALL_RO", Kind.READ),
    ]:
        c = table.classify([name.encode(), b"x", b"2", b"{a}1", b"{a}2", b"arg"])
        assert (c.kind, c.keys, c.slot) == (kind, (b"{a}1", b"{a}2"), key_slot(b"a")), name
        # No key declared: it may touch none (the agent sees to it), so any server runs it.
        c = table.classify([name.encode(), b"x", b"0", b"arg"])
        assert (c.kind, c.slot) == (Kind.WRITE if kind is Kind.WRITE else Kind.KEYLESS, None)
    with pytest.raises(CommandError, match="CROSSSLOT"):
        table.classify([b"EVAL", b"return 1", b"2", b"a", b"b"])


def test_a_request_knows_how_each_key_is_used() -> None:
    table = CommandTable.shipped()
    c = table.classify([b"LMOVE", b"{t}src", b"{t}dst", b"LEFT", b"RIGHT"])
    assert c.keys == (b"{t}src", b"{t}dst") and c.slot == key_slot(b"t")
    assert all(r.needs_old_value for r in c.key_refs)  # both lists are read, then changed
    (ref,) = table.classify([b"SET", b"k", b"v"]).key_refs
    assert ref.needs_old_value  # SET ... GET / KEEPTTL read the old value: RW in the spec
    (ref,) = table.classify([b"DEL", b"k"]).key_refs
    assert ref.removes and not ref.needs_old_value
    (ref,) = table.classify([b"RESTORE", b"k", b"0", b"payload"]).key_refs
    assert not ref.needs_old_value  # OW: a blind overwrite


def test_redis_own_errors() -> None:
    table = CommandTable.shipped()
    with pytest.raises(CommandError, match=r"^CROSSSLOT Keys in request don't hash"):
        table.classify([b"MGET", b"a", b"b"])
    with pytest.raises(CommandError, match=r"^ERR unknown command 'NOPE'"):
        table.classify([b"NOPE", b"x"])
    with pytest.raises(CommandError, match=r"^ERR wrong number of arguments for 'get' command"):
        table.classify([b"GET"])
    with pytest.raises(CommandError, match=r"^ERR unknown subcommand 'FOO'"):
        table.classify([b"OBJECT", b"FOO", b"k"])
    with pytest.raises(CommandError, match="greater than number of args"):
        table.classify([b"EVAL", b"return 1", b"3", b"k"])
    # A key count that is not a count names no keys, as in Redis Cluster: the command goes to
    # a server, whose Redis answers its own error ("ERR numkeys should be greater than 0").
    bad = table.classify([b"ZUNIONSTORE", b"d", b"x", b"k"])
    assert bad.keys == (b"d",) and bad.kind is Kind.WRITE
    for args in ([b"SINTERCARD", b"a", b"s"], [b"SINTERCARD", b"0", b"s"]):
        assert table.classify(args).kind is Kind.KEYLESS
    for args in ([b"ZMPOP", b"-1", b"z", b"MIN"], [b"ZMPOP", b"0", b"z", b"MIN"]):
        none = table.classify(args)
        assert none.kind is Kind.WRITE and none.keys == () and none.slot is None


def test_a_blocking_command_inside_a_transaction_does_not_block() -> None:
    table = CommandTable.shipped()
    blpop = table.classify([b"BLPOP", b"{a}x", b"{a}y", b"0"])
    assert blpop.kind is Kind.UNSUPPORTED and "blocking" in blpop.reason
    inside = in_transaction(blpop)
    assert inside.kind is Kind.WRITE and inside.slot == key_slot(b"{a}x") and not inside.reason
    assert in_transaction(table.classify([b"SUBSCRIBE", b"ch"])).kind is Kind.UNSUPPORTED
    assert in_transaction(table.classify([b"PING"])).kind is Kind.KEYLESS
    assert in_transaction(table.classify([b"DBSIZE"])).kind is Kind.FANOUT
    assert in_transaction(table.classify([b"FLUSHALL"])).kind is Kind.FANOUT
