"""The agent's data path against a real redis-server, over real UDP, agent in-process."""

from __future__ import annotations

import asyncio

from netmigrate.agent.reserved import AGENT_ALIVE_KEY, AGENT_STATE_KEY, RESERVED_PREFIX
from netmigrate.agent.slots import SlotState
from netmigrate.protocol.codec import (
    Control,
    CountReply,
    Delete,
    Empty,
    ErrorReply,
    Get,
    Header,
    IncrBy,
    IntReply,
    MGet,
    MGetReply,
    MSet,
    Set,
    SetReply,
    ValueReply,
    decode,
    encode,
)
from netmigrate.protocol.constants import (
    HEADER_LEN,
    REPLY_BIT,
    Flag,
    Op,
    SetCondition,
    Status,
)
from netmigrate.protocol.slot import key_slot

#: What an agent writes of its own at start (nothing else may appear after refused requests).
AGENT_OWN_KEYS = {AGENT_STATE_KEY, AGENT_ALIVE_KEY}


async def test_every_op_against_redis(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    redis = cluster_redis.client()

    r = await rpc(Op.SET, Set(b"k1", b"v1"))
    assert (r.header.status, r.body) == (Status.OK, SetReply(True))
    assert redis.get(b"k1") == b"v1"

    r = await rpc(Op.GET, Get(b"k1"))
    assert (r.header.status, r.body) == (Status.OK, ValueReply(b"v1"))
    r = await rpc(Op.GET, Get(b"missing"))
    assert (r.header.status, r.body) == (Status.NOT_FOUND, ValueReply(None))

    r = await rpc(Op.INCRBY, IncrBy(b"n", 5))
    assert r.body == IntReply(5)
    r = await rpc(Op.INCRBY, IncrBy(b"n", -7))
    assert r.body == IntReply(-2)
    assert redis.get(b"n") == b"-2"

    items = ((b"{u}:a", b"1"), (b"{u}:b", b""), (b"{u}:c", b"\x00\xff"))
    r = await rpc(Op.MSET, MSet(items))
    assert (r.header.status, r.body) == (Status.OK, Empty())
    assert redis.mget([k for k, _ in items]) == [v for _, v in items]
    r = await rpc(Op.MGET, MGet((b"{u}:a", b"{u}:zz", b"{u}:c")))
    assert r.body == MGetReply((b"1", None, b"\x00\xff"))

    r = await rpc(Op.DEL, Delete(b"k1"))
    assert r.body == CountReply(1)
    r = await rpc(Op.DEL, Delete(b"k1"))
    assert r.body == CountReply(0)
    assert redis.exists(b"k1") == 0

    snap = agent.stats.snapshot()
    assert snap.requests["GET"] == 2 and snap.requests["MSET"] == 1
    assert snap.replies["OK"] == 8 and snap.replies["NOT_FOUND"] == 1


async def test_reply_echoes_ids_and_flags(raw_agent) -> None:
    _, rpc = await raw_agent()
    flags = Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY
    r = await rpc(Op.GET, Get(b"x"), request_id=(0xDEADBEEF << 32) | 42, flags=flags)
    assert r.header.request_id == (0xDEADBEEF << 32) | 42
    assert r.header.flags == flags
    assert r.header.keyspace == 50000 and r.header.slot == key_slot(b"x")


async def test_ttl_and_conditions(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent()
    redis = cluster_redis.client()
    assert (await rpc(Op.SET, Set(b"t", b"1", ttl_ms=60_000))).body == SetReply(True)
    assert 55_000 < redis.pttl(b"t") <= 60_000
    assert (await rpc(Op.SET, Set(b"t", b"2", condition=SetCondition.NX))).body == SetReply(False)
    assert redis.get(b"t") == b"1"
    assert (await rpc(Op.SET, Set(b"t", b"3", condition=SetCondition.XX))).body == SetReply(True)
    assert redis.get(b"t") == b"3"
    assert redis.pttl(b"t") == -1  # a plain SET drops the TTL, as in Redis
    r = await rpc(Op.SET, Set(b"absent", b"x", condition=SetCondition.XX))
    assert r.body == SetReply(False)
    assert redis.exists(b"absent") == 0
    r = await rpc(Op.SET, Set(b"short", b"x", ttl_ms=50, condition=SetCondition.NX))
    assert r.body == SetReply(True)
    await asyncio.sleep(0.15)
    assert (await rpc(Op.GET, Get(b"short"))).header.status == Status.NOT_FOUND


async def test_wrong_owner_for_slots_not_owned(raw_agent, cluster_redis) -> None:
    mine = key_slot(b"mine")
    agent, rpc = await raw_agent(initial_slots=frozenset({mine}))
    assert key_slot(b"other") != mine
    r = await rpc(Op.SET, Set(b"other", b"v"))
    assert r.header.status == Status.WRONG_OWNER
    assert isinstance(r.body, ErrorReply) and str(key_slot(b"other")) in r.body.message
    assert cluster_redis.client().exists(b"other") == 0
    assert (await rpc(Op.SET, Set(b"mine", b"v"))).header.status == Status.OK
    assert agent.stats.snapshot().replies["WRONG_OWNER"] == 1


async def test_crossslot_and_slot_mismatch_change_nothing(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent()
    redis = cluster_redis.client()
    assert key_slot(b"a") != key_slot(b"b")
    r = await rpc(Op.MSET, MSet(((b"a", b"1"), (b"b", b"2"))))
    assert r.header.status == Status.CROSSSLOT
    r = await rpc(Op.MGET, MGet((b"a", b"b")))
    assert r.header.status == Status.CROSSSLOT
    r = await rpc(Op.SET, Set(b"a", b"1"), slot=(key_slot(b"a") + 1) % 16384)
    assert r.header.status == Status.BAD_REQUEST
    assert "hashes to" in r.body.message
    r = await rpc(Op.MSET, MSet(((b"{t}1", b"1"), (b"{t}2", b"2"))), slot=key_slot(b"zz"))
    assert r.header.status == Status.BAD_REQUEST
    assert set(redis.keys()) == AGENT_OWN_KEYS


async def test_reserved_keys_are_refused(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent()
    redis = cluster_redis.client()
    before = redis.hgetall(AGENT_STATE_KEY)
    for op, body in [
        (Op.GET, Get(AGENT_STATE_KEY)),
        (Op.DEL, Delete(AGENT_STATE_KEY)),
        (Op.SET, Set(RESERVED_PREFIX + b"x", b"1")),
        (Op.MSET, MSet(((RESERVED_PREFIX + b"a", b"1"), (RESERVED_PREFIX + b"b", b"2")))),
    ]:
        r = await rpc(op, body)
        assert r.header.status == Status.BAD_REQUEST, op
        assert "reserved" in r.body.message
    assert redis.hgetall(AGENT_STATE_KEY) == before
    assert set(redis.keys()) == AGENT_OWN_KEYS


async def test_too_large_replies_and_requests(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent(max_datagram=1000)
    redis = cluster_redis.client()
    redis.set(b"big", b"x" * 2000)  # written behind the agent's back
    r = await rpc(Op.GET, Get(b"big"))
    assert r.header.status == Status.TOO_LARGE
    assert "1000" in r.body.message
    redis.set(b"{m}1", b"y" * 600)
    redis.set(b"{m}2", b"y" * 600)
    r = await rpc(Op.MGET, MGet((b"{m}1", b"{m}2")))
    assert r.header.status == Status.TOO_LARGE
    # A request above the limit is refused whole, before anything is applied.
    r = await rpc(Op.SET, Set(b"k", b"z" * 1000))
    assert r.header.status == Status.TOO_LARGE
    assert redis.exists(b"k") == 0
    # Exactly at the limit is fine.
    value = b"v" * (1000 - HEADER_LEN - 4)
    redis.set(b"edge", value)
    assert (await rpc(Op.GET, Get(b"edge"))).body == ValueReply(value)
    assert agent.stats.snapshot().replies["TOO_LARGE"] == 3


async def test_incrby_on_a_string_is_an_error_with_redis_message(raw_agent, cluster_redis) -> None:
    _, rpc = await raw_agent()
    cluster_redis.client().set(b"s", b"abc")
    r = await rpc(Op.INCRBY, IncrBy(b"s", 1))
    assert r.header.status == Status.ERROR
    assert "not an integer" in r.body.message
    assert cluster_redis.client().get(b"s") == b"abc"
    cluster_redis.client().set(b"max", str(2**63 - 1))
    r = await rpc(Op.INCRBY, IncrBy(b"max", 1))
    assert r.header.status == Status.ERROR and "overflow" in r.body.message


async def test_retried_incrby_is_applied_once(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    rid = (0x1234 << 32) | 1
    first = await rpc(Op.INCRBY, IncrBy(b"ctr", 10), request_id=rid)
    again = await rpc(Op.INCRBY, IncrBy(b"ctr", 10), request_id=rid, flags=Flag.RETRY)
    plain = await rpc(Op.INCRBY, IncrBy(b"ctr", 10), request_id=rid)
    assert first.body == again.body == plain.body == IntReply(10)
    assert cluster_redis.client().get(b"ctr") == b"10"
    assert agent.stats.snapshot().counters["dedup_hits"] == 2
    # The same counter from another client id is another request.
    other = await rpc(Op.INCRBY, IncrBy(b"ctr", 10), request_id=(0x9999 << 32) | 1)
    assert other.body == IntReply(20)


async def test_retry_while_in_flight_is_applied_once(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    redis = cluster_redis.client()
    rid = (0x77 << 32) | 5
    # Hold every write in Redis so that the original stays in flight while the retry arrives.
    redis.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    rpc.send(Op.INCRBY, IncrBy(b"slow", 1), request_id=rid)
    await asyncio.sleep(0.05)
    rpc.send(Op.INCRBY, IncrBy(b"slow", 1), request_id=rid, flags=Flag.RETRY)
    replies = [await rpc.reply(timeout=3), await rpc.reply(timeout=3)]
    assert [m.body for m in replies] == [IntReply(1), IntReply(1)]
    assert redis.get(b"slow") == b"1"
    counters = agent.stats.snapshot().counters
    assert counters["dedup_inflight"] == 1
    assert counters["redis_commands"] == 1


async def test_refused_requests_are_not_remembered(raw_agent, cluster_redis) -> None:
    # A WRONG_OWNER answer applied nothing: the same request id must run when it can.
    slot = key_slot(b"later")
    agent, rpc = await raw_agent(initial_slots=frozenset())
    rid = (0x42 << 32) | 9
    r = await rpc(Op.INCRBY, IncrBy(b"later", 1), request_id=rid)
    assert r.header.status == Status.WRONG_OWNER
    agent.table.set_state([slot], SlotState.OWNED)
    r = await rpc(Op.INCRBY, IncrBy(b"later", 1), request_id=rid, flags=Flag.RETRY)
    assert (r.header.status, r.body) == (Status.OK, IntReply(1))


async def test_bad_keyspace_op_and_malformed_datagrams(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    r = await rpc(Op.GET, Get(b"k"), keyspace=50001)
    assert r.header.status == Status.BAD_REQUEST and "keyspace" in r.body.message
    r = await rpc(Op.SLOT_START, Control(1))
    assert r.header.status == Status.BAD_REQUEST

    # Malformed, header readable: BAD_REQUEST naming the request id.
    truncated = encode(Header(op=Op.SET, request_id=777, slot=3), Set(b"k", b"v"))[:-1]
    rpc.peer.send(truncated, rpc.address)
    r = await rpc.reply()
    assert (r.header.request_id, r.header.status) == (777, Status.BAD_REQUEST)
    assert r.header.op == Op.SET | REPLY_BIT
    # No readable header, or a reply: counted, never answered.
    rpc.peer.send(b"\x01\x02", rpc.address)
    rpc.peer.send(encode(Header(op=Op.GET | REPLY_BIT), ValueReply(b"x")), rpc.address)
    rpc.peer.send(encode(Header(op=Op.GET | REPLY_BIT), ValueReply(b"x"))[:-1], rpc.address)
    await rpc.peer.expect_silence(0.2)
    counters = agent.stats.snapshot().counters
    assert counters["bad_datagrams"] == 3
    assert counters["bad_answered"] == 1
    assert counters["unexpected_replies"] == 1
    assert set(cluster_redis.client().keys()) == AGENT_OWN_KEYS
    # And it still serves.
    assert (await rpc(Op.SET, Set(b"k", b"v"))).header.status == Status.OK


async def test_pipelined_requests_keep_per_key_order(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    n = 300
    for i in range(n):
        rpc.send(Op.SET, Set(b"seq", b"%d" % i))
        rpc.send(Op.INCRBY, IncrBy(b"ctr", 1))
    replies = [await rpc.reply() for _ in range(2 * n)]
    assert all(m.header.status == Status.OK for m in replies)
    incr = sorted(m.body.value for m in replies if m.header.op == Op.INCRBY | REPLY_BIT)
    assert incr == list(range(1, n + 1))
    assert cluster_redis.client().get(b"seq") == b"%d" % (n - 1)
    counters = agent.stats.snapshot().counters
    assert counters["redis_commands"] == 2 * n
    assert counters["batches"] < 2 * n  # several requests shared a round trip


async def test_redis_connection_loss_is_survived(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    assert (await rpc(Op.SET, Set(b"k", b"1"))).header.status == Status.OK
    killed = cluster_redis.client().execute_command(
        "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
    )
    assert killed >= 1
    deadline = asyncio.get_running_loop().time() + 5
    statuses = []
    while True:
        r = await rpc(Op.GET, Get(b"k"))
        statuses.append(r.header.status)
        if r.header.status == Status.OK:
            break
        assert r.header.status == Status.BUSY, r
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert r.body == ValueReply(b"1")
    assert agent.stats.snapshot().counters["redis_reconnects"] >= 1


async def test_raw_reply_datagram_is_bytes_exact(raw_agent) -> None:
    # Guards the fast reply path: the agent's bytes equal the reference encoder's.
    _, rpc = await raw_agent()
    rid = rpc.send(Op.GET, Get(b"none"), flags=Flag.RETRY)
    data, _ = await rpc.peer.recv()
    expected = Header(
        op=Op.GET | REPLY_BIT,
        request_id=rid,
        keyspace=50000,
        slot=key_slot(b"none"),
        flags=Flag.RETRY,
        status=Status.NOT_FOUND,
    )
    assert data == encode(expected, ValueReply(None))
    assert decode(data).header == expected


async def test_a_write_whose_redis_connection_drops_is_retryable_and_applied_once(
    raw_agent, cluster_redis
) -> None:
    """The agent's connection is killed while Redis holds its INCRBY (clients paused): the
    answer is BUSY, not ERROR, and the client's retry with the same id applies it once; a
    further retry is answered from what Redis recorded, not applied again (D16)."""
    _, rpc = await raw_agent()
    admin = cluster_redis.client()
    assert (await rpc(Op.INCRBY, IncrBy(b"drop", 10))).body == IntReply(10)
    admin.execute_command("CLIENT", "PAUSE", "2000", "WRITE")
    try:
        rid = rpc.send(Op.INCRBY, IncrBy(b"drop", 1))
        await asyncio.sleep(0.2)  # the script is queued in Redis, behind the pause
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        lost = await rpc.reply()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert lost.header.request_id == rid
    assert lost.header.status == Status.BUSY, lost
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # BUSY while the agent reconnects
        rpc.send(Op.INCRBY, IncrBy(b"drop", 1), request_id=rid, flags=Flag.RETRY)
        again = await rpc.reply()
        if again.header.status != Status.BUSY:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert again.header.status == Status.OK and again.body == IntReply(11)
    rpc.send(Op.INCRBY, IncrBy(b"drop", 1), request_id=rid, flags=Flag.RETRY)
    assert (await rpc.reply()).body == IntReply(11)
    assert int(admin.get(b"drop")) == 11
