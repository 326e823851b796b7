"""The agent's generic-command scripts against real Redis: a command run through them answers
the RESP bytes Redis itself sends a RESP2 client, a write is recorded and marks dirty only what
it changed, and a recorded request id is answered from its record."""

from __future__ import annotations

import socket

import pytest
from support.resp_wire import raw_replies, raw_values

from netmigrate.agent.generic import GenericCommands, GenericRefused
from netmigrate.agent.generic_lua import SCRIPT_LOADS
from netmigrate.protocol.codec import RespReply, decode
from netmigrate.protocol.constants import HEADER, HEADER_LEN, VALUE_LEN, Op
from netmigrate.rediscmd.table import CommandTable

pytestmark = pytest.mark.redis

SETUP = [
    [b"HSET", b"{t}h", b"f", b"1", b"g", b"2"],
    [b"RPUSH", b"{t}l", b"a", b"b", b"c"],
    [b"SADD", b"{t}s", b"x"],
    [b"ZADD", b"{t}z", b"1.5", b"m", b"0.1", b"n"],
    [b"SET", b"{t}k", b"v"],
    [b"XADD", b"{t}x", b"1-1", b"f", b"v"],
]
READS = [
    [b"HGETALL", b"{t}h"],
    [b"HGET", b"{t}h", b"nope"],
    [b"LRANGE", b"{t}l", b"0", b"-1"],
    [b"SMEMBERS", b"{t}s"],
    [b"ZRANGE", b"{t}z", b"0", b"-1", b"WITHSCORES"],
    [b"ZSCORE", b"{t}z", b"n"],
    [b"TYPE", b"{t}h"],
    [b"TTL", b"{t}k"],
    [b"EXISTS", b"{t}k", b"{t}nope"],
    [b"MGET", b"{t}k", b"{t}nope"],
    [b"XRANGE", b"{t}x", b"-", b"+"],
    [b"GET", b"{t}h"],  # WRONGTYPE
    [b"STRLEN", b"{t}k"],
    [b"OBJECT", b"ENCODING", b"{t}l"],
]
WRITES = [
    [b"HINCRBY", b"{t}h", b"f", b"5"],
    [b"LPOP", b"{t}l"],
    [b"ZINCRBY", b"{t}z", b"0.2", b"n"],
    [b"SET", b"{t}k", b"w", b"GET"],
    [b"APPEND", b"{t}k", b"xyz"],
    [b"INCR", b"{t}h"],  # WRONGTYPE
    [b"EXPIRE", b"{t}h", b"100"],
    [b"DEL", b"{t}s"],
    [b"LPUSH", b"{t}new", b"1"],
    [b"GETDEL", b"{t}nope"],
]


@pytest.fixture
def twins(redis_server, cluster_redis):  # type: ignore[no-untyped-def]
    """A plain Redis (what a client would see) and the agent's cluster-mode Redis, same data."""
    plain = redis_server(cluster=False)
    raw_replies(plain.port, SETUP)
    raw_replies(cluster_redis.port, SETUP)
    for call in SCRIPT_LOADS:
        with socket.create_connection(("127.0.0.1", cluster_redis.port)) as s:
            s.sendall(call)
            assert s.recv(100).startswith(b"$40")
    return plain, cluster_redis


def test_reads_answer_redis_own_bytes(twins) -> None:  # type: ignore[no-untyped-def]
    plain, agent_redis = twins
    gc = GenericCommands(CommandTable.shipped(), 10_000)
    slot = gc.table.classify(READS[0]).slot
    assert slot is not None
    calls = [gc.read_call(gc.check([tuple(c)], False, False, slot)) for c in READS]
    through = raw_values(agent_redis.port, calls)
    assert through == raw_replies(plain.port, READS)


def test_writes_answer_redis_own_bytes_record_and_mark_dirty(twins) -> None:  # type: ignore[no-untyped-def]
    plain, agent_redis = twins
    gc = GenericCommands(CommandTable.shipped(), 10_000)
    slot = gc.table.classify(WRITES[0]).slot
    header = HEADER.pack(1, Op.CMD_WRITE | 0x80, 0, 0, 50000, slot, 0, 0, 7)
    calls = [
        gc.write_call(gc.check([tuple(c)], False, True, slot), b"rid:%d" % i, header, b"{t}dirty")
        for i, c in enumerate(WRITES)
    ]
    answers = raw_values(agent_redis.port, calls)
    assert [a[1] for a in answers] == raw_replies(plain.port, WRITES)
    # Marked dirty: the keys of writes that succeeded, GETDEL of a missing key included (it
    # ran: a tombstone); not INCR's, which failed with WRONGTYPE and changed nothing.
    c = agent_redis.client()
    assert c.smembers(b"{t}dirty") == {
        b"{t}h",
        b"{t}l",
        b"{t}z",
        b"{t}k",
        b"{t}s",
        b"{t}new",
        b"{t}nope",
    }
    assert answers[5][2:] == []  # the failed INCR marked nothing
    assert c.get(b"rid:5") is None  # ... and recorded nothing
    # A recorded id: the record, a whole reply datagram; the write is not applied again.
    record = c.get(b"rid:0")
    assert record[:1] == b"d" and record[1 : 1 + HEADER_LEN] == header
    assert decode(record[1:]).body == RespReply(b":6\r\n")
    again = raw_values(agent_redis.port, [calls[0]])[0]
    assert again == [1, record]
    assert c.hget(b"{t}h", b"f") == b"6"


def test_a_transaction_runs_every_command_and_answers_exec_array(twins) -> None:  # type: ignore[no-untyped-def]
    plain, agent_redis = twins
    gc = GenericCommands(CommandTable.shipped(), 10_000)
    commands = [(b"HSET", b"{t}h", b"f", b"9"), (b"INCR", b"{t}h"), (b"EXPIRE", b"{t}h", b"50")]
    request = gc.check(commands, True, True, gc.table.classify(commands[0]).slot)
    header = HEADER.pack(1, Op.CMD_WRITE | 0x80, 0, 0, 50000, 0, 0, 0, 8)
    answer = raw_values(agent_redis.port, [gc.write_call(request, b"rid:t", header, None)])[0]
    native = raw_replies(plain.port, [[b"MULTI"], *[list(c) for c in commands], [b"EXEC"]])[-1]
    assert answer[1] == native


def test_what_a_generic_request_may_not_do() -> None:
    gc = GenericCommands(CommandTable.shipped(), 10_000)
    slot = gc.table.classify([b"GET", b"a"]).slot
    with pytest.raises(GenericRefused, match="must be sent as a write request"):
        gc.check([(b"SET", b"a", b"1")], False, False, slot)
    with pytest.raises(GenericRefused, match="CROSSSLOT") as info:
        gc.check([(b"SET", b"a", b"1"), (b"SET", b"b", b"1")], True, True, slot)
    assert info.value.crossslot
    with pytest.raises(GenericRefused, match="keys hash to"):
        gc.check([(b"GET", b"b")], False, False, slot)
    with pytest.raises(GenericRefused, match="cannot run inside a NetMigrate request"):
        gc.check([(b"FCALL", b"f", b"1", b"a")], False, True, slot)
    with pytest.raises(GenericRefused, match="must be sent as a write request"):
        gc.check([(b"EVAL", b"return 1", b"1", b"a")], False, False, slot)
    with pytest.raises(GenericRefused, match="blocking"):
        gc.check([(b"BLPOP", b"a", b"0")], False, True, slot)
    assert VALUE_LEN.size == 4  # the record's reply length prefix the script packs (>I4)
