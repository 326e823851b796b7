"""Request id records in Redis (D16): the recording script, the record codec, expiry, restore.

Real redis-server (the shared one-node cluster owning all slots), real UDP where an agent is
involved. The crash of a real agent process is in test_dedup_persist_process.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio

from netmigrate.agent.commands import OPS
from netmigrate.agent.config import UDP_MAX_PAYLOAD, parse_redis_url
from netmigrate.agent.dedup import (
    RECORD_TTL_MS,
    SCRIPT_LOAD,
    WRITE_SCRIPT,
    WRITE_SCRIPT_SHA,
    RecordError,
    WriteRecorder,
    datagram_record,
    decode_record,
    fingerprint,
    load_records,
    record_replies,
)
from netmigrate.agent.reserved import (
    AGENT_STATE_KEY,
    REQUEST_ID_PREFIX,
    RESERVED_SLOT,
    dirty_key,
    request_id_key,
)
from netmigrate.agent.resp import ReplyError, RespConnection
from netmigrate.protocol.codec import (
    CountReply,
    Delete,
    Empty,
    Get,
    IncrBy,
    IntReply,
    MSet,
    Set,
    SetReply,
    encode,
    encode_request,
)
from netmigrate.protocol.constants import (
    F_REQUEST_ID,
    HEADER,
    HEADER_LEN,
    Flag,
    Op,
    SetCondition,
    Status,
)
from netmigrate.protocol.slot import key_slot

KEYSPACE = 50000


def header_of(op: int, request_id: int, key: bytes, body: Any, flags: int = 0) -> bytes:
    return encode_request(op, request_id, KEYSPACE, key_slot(key), body, flags)[:HEADER_LEN]


@pytest_asyncio.fixture
async def conn(cluster_redis) -> AsyncIterator[RespConnection]:
    """A data-path style connection with the script loaded."""
    c = await RespConnection.open(parse_redis_url(cluster_redis.url))
    try:
        assert await c.call(b"SCRIPT", b"LOAD", WRITE_SCRIPT) == WRITE_SCRIPT_SHA
        yield c
    finally:
        c.close()


@pytest_asyncio.fixture
async def admin(cluster_redis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host=cluster_redis.host, port=cluster_redis.port)
    try:
        yield client
    finally:
        await client.aclose()


async def run(conn: RespConnection, raw: bytes) -> Any:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    conn.send(raw, ((lambda reply, _: fut.set_result(reply), None),))
    return await asyncio.wait_for(fut, 5)


async def write(
    conn: RespConnection,
    recorder: WriteRecorder,
    op: int,
    body: Any,
    request_id: int,
    *,
    dirty: bytes | None = None,
) -> Any:
    spec = OPS[op]
    keys = spec.keys(body)
    datagram = encode_request(op, request_id, KEYSPACE, key_slot(keys[0]), body)
    command = recorder.command(
        spec.command(body),
        keys,
        datagram[:HEADER_LEN],
        request_id,
        spec.readback,
        dirty,
        fingerprint=fingerprint(datagram),
    )
    return await run(conn, command)


# -- the script and the record codec -------------------------------------------------------


async def test_every_write_is_applied_and_recorded_with_its_answer(conn, cluster_redis) -> None:
    r = cluster_redis.client()
    rec = WriteRecorder()
    cases = [
        (Op.SET, Set(b"s", b"v"), b"OK"),
        (Op.SET, Set(b"s", b"w", condition=SetCondition.NX), None),
        (Op.INCRBY, IncrBy(b"n", 2**62), 2**62),
        (Op.INCRBY, IncrBy(b"n", 2**62 - 1), 2**63 - 1),  # beyond a double's 53 bits
        (Op.DEL, Delete(b"s"), 1),
        (Op.MSET, MSet(((b"{m}a", b"1"), (b"{m}b", b"2"))), b"OK"),
    ]
    for i, (op, body, answer) in enumerate(cases, start=1):
        rid = (0xAB << 32) | i
        reply = await write(conn, rec, op, body, rid)
        # The script answers what the command would have (INCRBY: the value read back).
        assert OPS[op].reply(reply) == OPS[op].reply(answer), (op, reply)
        fields, recorded = decode_record(r.get(request_id_key(rid)))
        assert fields == HEADER.unpack(header_of(op, rid, OPS[op].keys(body)[0], body))
        assert recorded == answer
    assert r.get(b"n") == str(2**63 - 1).encode()
    assert r.get(b"s") is None and r.mget(b"{m}a", b"{m}b") == [b"1", b"2"]
    # The records live in the reserved slot, apart from the written keys.
    assert key_slot(request_id_key(1)) == RESERVED_SLOT


async def test_a_recorded_id_is_answered_from_its_record_not_applied(conn, cluster_redis) -> None:
    r = cluster_redis.client()
    rec = WriteRecorder()
    rid = (0x5 << 32) | 77
    assert await write(conn, rec, Op.INCRBY, IncrBy(b"ctr", 3), rid) == b"3"
    again = await write(conn, rec, Op.INCRBY, IncrBy(b"ctr", 3), rid)
    assert isinstance(again, list) and decode_record(again[0])[1] == 3
    assert r.get(b"ctr") == b"3"


async def test_an_error_applies_and_records_nothing(conn, cluster_redis) -> None:
    r = cluster_redis.client()
    r.set(b"str", b"abc")
    rid = (0x6 << 32) | 1
    reply = await write(conn, WriteRecorder(), Op.INCRBY, IncrBy(b"str", 1), rid)
    assert isinstance(reply, ReplyError)
    assert str(reply) == "ERR value is not an integer or out of range"  # Redis' own words
    assert r.get(b"str") == b"abc" and r.exists(request_id_key(rid)) == 0
    # The same id runs again once it can succeed.
    r.set(b"str", b"41")
    assert await write(conn, WriteRecorder(), Op.INCRBY, IncrBy(b"str", 1), rid) == b"42"


async def test_dirty_mark_is_part_of_the_same_step(conn, cluster_redis) -> None:
    r = cluster_redis.client()
    rec = WriteRecorder()
    slot = key_slot(b"{d}x")
    items = tuple((b"{d}%d" % i, b"v") for i in range(2500))  # > 4000 args: chunked inside
    reply = await write(conn, rec, Op.MSET, MSet(items), 1, dirty=dirty_key(slot))
    assert reply == b"OK"
    assert r.scard(dirty_key(slot)) == len(items)
    assert r.get(b"{d}2499") == b"v"
    assert decode_record(r.get(request_id_key(1)))[1] == b"OK"
    # A failing write marks nothing dirty (it changed nothing).
    r.set(b"{d}s", b"abc")
    reply = await write(conn, rec, Op.INCRBY, IncrBy(b"{d}s", 1), 2, dirty=dirty_key(slot))
    assert isinstance(reply, ReplyError)
    assert r.sismember(dirty_key(slot), b"{d}s") == 0


async def test_records_expire_with_the_given_ttl(conn, cluster_redis) -> None:
    r = cluster_redis.client()
    await write(conn, WriteRecorder(), Op.SET, Set(b"a", b"1"), 1)
    assert RECORD_TTL_MS - 1000 < r.pttl(request_id_key(1)) <= RECORD_TTL_MS
    await write(conn, WriteRecorder(ttl_ms=100), Op.SET, Set(b"a", b"2"), 2)
    assert 0 < r.pttl(request_id_key(2)) <= 100
    await asyncio.sleep(0.25)
    assert r.exists(request_id_key(2)) == 0
    # Expired, so the id is a new request again (the client gave up on it long ago).
    assert await write(conn, WriteRecorder(), Op.SET, Set(b"a", b"3"), 2) == b"OK"
    assert r.get(b"a") == b"3"
    with pytest.raises(ValueError, match="positive"):
        WriteRecorder(ttl_ms=0)


def test_decode_record_refuses_what_it_did_not_write() -> None:
    header = header_of(Op.SET, 9, b"k", Set(b"k", b"v"))
    assert decode_record(b"n" + header) == (HEADER.unpack(header), None)
    assert decode_record(b"i" + header + b"-12") == (HEADER.unpack(header), -12)
    assert decode_record(datagram_record(b"R" * HEADER_LEN)) == b"R" * HEADER_LEN
    for bad, why in [
        (b"", "empty"),
        (b"s" + header[:5], "shorter"),
        (b"d" + b"x", "shorter"),
        (b"n" + header + b"junk", "kind"),
        (b"i" + header + b"1.5", "integer"),
        (b"z" + header, "kind"),
    ]:
        with pytest.raises(RecordError, match=why):
            decode_record(bad)


# -- restore at start ---------------------------------------------------------------------


async def test_load_records_oldest_first_and_only_records(conn, admin, cluster_redis) -> None:
    r = cluster_redis.client()
    r.hset(AGENT_STATE_KEY, "format", "1")  # another reserved key in the same slot
    for i, ttl in [(1, 3000), (2, 1000), (3, 2000)]:
        await write(conn, WriteRecorder(ttl_ms=ttl), Op.SET, Set(b"k%d" % i, b"v"), i)
    r.set(request_id_key(4), b"n" + b"x" * HEADER_LEN, px=50)
    await asyncio.sleep(0.1)  # record 4 expires
    records = await load_records(admin, batch=2)
    assert [decode_record(x)[0][F_REQUEST_ID] for x in records] == [2, 3, 1]
    assert await load_records(admin) == records
    r.flushall()
    assert await load_records(admin) == []


async def test_record_replies_keeps_existing_records(admin, cluster_redis) -> None:
    r = cluster_redis.client()
    r.set(request_id_key(1), b"existing")
    assert await record_replies(admin, [(1, b"A" * 30), (2, b"B" * 30)], ttl_ms=5000) == 1
    assert r.get(request_id_key(1)) == b"existing"
    assert decode_record(r.get(request_id_key(2))) == b"B" * 30
    assert 0 < r.pttl(request_id_key(2)) <= 5000
    assert await record_replies(admin, []) == 0


async def test_agent_restores_records_into_its_window(
    raw_agent, agent_factory, cluster_redis
) -> None:
    agent, rpc = await raw_agent()
    rid = (0x31 << 32) | 1
    first = await rpc(Op.INCRBY, IncrBy(b"c", 5), request_id=rid)
    mset = await rpc(Op.MSET, MSet(((b"{q}a", b"1"),)), request_id=rid + 1)
    await rpc(Op.GET, Get(b"c"), request_id=rid + 2)  # reads are not recorded
    await agent.stop()
    r = cluster_redis.client()
    # Not records this agent writes: skipped (and logged), the agent starts all the same.
    r.set(REQUEST_ID_PREFIX + b"garbage", b"?", px=60_000)
    read = b"n" + header_of(Op.GET, 999, b"c", Get(b"c"))
    r.set(request_id_key(999), read, px=60_000)

    again = await agent_factory(cluster_redis)
    assert again.dedup.get(rid).reply == encode_reply_of(first)
    assert again.dedup.get(rid + 1).reply == encode_reply_of(mset)
    assert again.dedup.get(rid + 2) is None and again.dedup.get(999) is None
    assert again.dedup.get(rid).slot == key_slot(b"c")  # what a migration hands over
    assert list(again.dedup.request_ids(key_slot(b"c"))) == [rid]


def encode_reply_of(message: Any) -> bytes:
    return encode(message.header, message.body)


# -- through the agent's data path ---------------------------------------------------------


async def test_window_miss_is_caught_by_the_record(raw_agent, cluster_redis) -> None:
    # A window of one entry forgets an id at once; the record in Redis still answers it.
    agent, rpc = await raw_agent(dedup_entries=1, dedup_per_client=1)
    rid = (0x40 << 32) | 1
    first = await rpc(Op.INCRBY, IncrBy(b"w", 10), request_id=rid)
    await rpc(Op.SET, Set(b"other", b"x"), request_id=rid + 1)
    assert agent.dedup.get(rid) is None
    retry = await rpc(Op.INCRBY, IncrBy(b"w", 10), request_id=rid, flags=Flag.RETRY)
    assert encode_reply_of(retry) == encode_reply_of(first)  # flags of the original, too
    assert retry.body == IntReply(10)
    assert cluster_redis.client().get(b"w") == b"10"
    assert agent.stats.snapshot().counters["dedup_hits"] == 1


async def test_reply_bytes_of_a_fresh_and_a_recorded_answer_agree(raw_agent) -> None:
    _, rpc = await raw_agent(dedup_entries=1, dedup_per_client=1)
    for i, (op, body, expected) in enumerate(
        [
            (Op.SET, Set(b"x", b"1", ttl_ms=60_000), SetReply(True)),
            (Op.SET, Set(b"x", b"2", condition=SetCondition.NX), SetReply(False)),
            (Op.DEL, Delete(b"x"), CountReply(1)),
            (Op.MSET, MSet(((b"{y}1", b"a"), (b"{y}2", b"b"))), Empty()),
            (Op.INCRBY, IncrBy(b"z", -(2**60)), IntReply(-(2**60))),
        ],
        start=1,
    ):
        rid = (0x41 << 32) | i
        first = await rpc(op, body, request_id=rid)
        assert first.body == expected
        await rpc(Op.GET, Get(b"evict"), request_id=rid + 1000)  # pushes rid out of the window
        retry = await rpc(op, body, request_id=rid, flags=Flag.RETRY)
        assert encode_reply_of(retry) == encode_reply_of(first), op


async def test_big_mset_runs_in_one_script(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent(max_datagram=UDP_MAX_PAYLOAD)
    items = tuple((b"{big}%d" % i, b"v") for i in range(2100))  # 4200 command arguments
    r = await rpc(Op.MSET, MSet(items))
    assert r.header.status == Status.OK
    assert cluster_redis.client().get(b"{big}2099") == b"v"


async def test_flushed_script_is_reloaded(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent()
    cluster_redis.client().script_flush()
    rid = (0x50 << 32) | 1
    r = await rpc(Op.INCRBY, IncrBy(b"f", 1), request_id=rid)
    assert r.header.status == Status.BUSY and "NOSCRIPT" in r.body.message
    assert cluster_redis.client().exists(b"f") == 0  # not applied, so not remembered either
    r = await rpc(Op.INCRBY, IncrBy(b"f", 1), request_id=rid, flags=Flag.RETRY)
    assert (r.header.status, r.body) == (Status.OK, IntReply(1))
    assert cluster_redis.client().script_exists(WRITE_SCRIPT_SHA.decode()) == [True]


async def test_agent_without_scripting_rights_refuses_to_start(redis_server, agent_factory) -> None:
    from netmigrate.agent.datapath import ScriptLoadError

    server = redis_server(cluster=True, username="noscript", password="pw-for-tests")
    server.assign_all_slots()
    admin_client = server.client()
    admin_client.execute_command("ACL", "SETUSER", "noscript", "-@scripting")
    with pytest.raises(ScriptLoadError, match="write script"):
        await agent_factory(server)


def test_script_load_command_is_the_script() -> None:
    assert SCRIPT_LOAD.endswith(b"$%d\r\n%b\r\n" % (len(WRITE_SCRIPT), WRITE_SCRIPT))


async def test_undeclared_keys_work_too(conn, cluster_redis) -> None:
    # DataPath.queue may get a write without its keys (the target's "slot completed
    # meanwhile" path): the script then declares none and still applies and records it.
    spec = OPS[Op.INCRBY]
    body = IncrBy(b"u", 4)
    header = header_of(Op.INCRBY, 5, b"u", body)
    raw = WriteRecorder().command(
        spec.command(body), (), header, 5, spec.readback, fingerprint=b"F" * 8
    )
    assert await run(conn, raw) == b"4"
    assert decode_record(cluster_redis.client().get(request_id_key(5)))[1] == 4
    assert isinstance(await run(conn, raw), list)  # recorded: not applied again
    assert cluster_redis.client().get(b"u") == b"4"
