"""Issue #12, item 4: two clients can never consume each other's answers.

A request id is 32 random bits of client id and a 32-bit counter. Two clients that drew the
same id used to be one client to the agents: the second one's write was "answered" with the
first one's recorded reply and never applied. Every dedup entry and every record now carries
the request's fingerprint, and a request whose id is known for a different request is refused
(ERROR, applied nowhere), in the memory window, from the Redis record (window forgot it), and
at a migration target that got the id from the source.
"""

from __future__ import annotations

import pytest

from netmigrate.agent.dedup import (
    FINGERPRINT_LEN,
    DedupWindow,
    RecordError,
    datagram_record,
    decode_record,
    fingerprint,
    record_fingerprint,
)
from netmigrate.client import AsyncClient, ServerError
from netmigrate.protocol.codec import Delete, Get, IncrBy, IntReply, MSet, Set, encode_request
from netmigrate.protocol.constants import HEADER, HEADER_LEN, Flag, Op, SetCondition, Status
from netmigrate.protocol.slot import key_slot

KS = 50000
RID = (0xC0FFEE << 32) | 1


def datagram(op: int, body, flags: int = 0, request_id: int = RID, keyspace: int = KS) -> bytes:  # type: ignore[no-untyped-def]
    key = body.keys[0] if hasattr(body, "keys") else body.key
    if isinstance(key, tuple):
        key = key[0]
    return encode_request(op, request_id, keyspace, key_slot(key), body, flags)


# -- the fingerprint ------------------------------------------------------------------------


def test_a_retry_or_a_switch_copy_has_the_same_fingerprint() -> None:
    body = Set(b"k", b"v", ttl_ms=500)
    fp = fingerprint(datagram(Op.SET, body))
    assert len(fp) == FINGERPRINT_LEN
    for flags in (Flag.RETRY, Flag.TO_TARGET, Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY):
        assert fingerprint(datagram(Op.SET, body, int(flags))) == fp
    assert fingerprint(datagram(Op.SET, body, request_id=RID + 7)) == fp  # id not included


def test_a_different_request_has_a_different_fingerprint() -> None:
    base = fingerprint(datagram(Op.SET, Set(b"k", b"v")))
    others = [
        datagram(Op.SET, Set(b"k", b"w")),
        datagram(Op.SET, Set(b"j", b"v")),
        datagram(Op.SET, Set(b"k", b"v", ttl_ms=1)),
        datagram(Op.SET, Set(b"k", b"v", condition=SetCondition.NX)),
        datagram(Op.DEL, Delete(b"k")),
        datagram(Op.GET, Get(b"k")),
        datagram(Op.SET, Set(b"k", b"v"), keyspace=KS + 1),
    ]
    fps = {fingerprint(d) for d in others}
    assert base not in fps and len(fps) == len(others)


def test_the_window_matches_by_fingerprint_and_unknown_matches_all() -> None:
    w = DedupWindow(16, 16, 1 << 20)
    e = w.begin(RID, 5, None, b"A" * 8)
    assert e.matches(b"A" * 8) and not e.matches(b"B" * 8)
    assert w.install(RID + 1, 5, b"reply", None)
    assert w.get(RID + 1).matches(b"anything")  # handed over without one: as before
    assert w.install(RID + 2, 5, b"reply", b"C" * 8) and w.get(RID + 2).fingerprint == b"C" * 8


def test_records_carry_the_fingerprint_and_old_records_still_read() -> None:
    header = datagram(Op.SET, Set(b"k", b"v"))[:HEADER_LEN]
    fp = b"12345678"
    assert decode_record(b"S" + header + fp + b"OK") == (HEADER.unpack(header), b"OK")
    assert record_fingerprint(b"S" + header + fp + b"OK") == fp
    assert decode_record(b"I" + header + fp + b"-3") == (HEADER.unpack(header), -3)
    assert decode_record(b"N" + header + fp) == (HEADER.unpack(header), None)
    reply = b"R" * HEADER_LEN
    assert decode_record(datagram_record(reply, fp)) == reply
    assert record_fingerprint(datagram_record(reply, fp)) == fp
    assert record_fingerprint(datagram_record(reply)) is None
    assert decode_record(datagram_record(reply)) == reply
    # Written by an agent before fingerprints (alive for up to the record TTL after an
    # upgrade): read as before, with no fingerprint.
    assert decode_record(b"s" + header + b"OK") == (HEADER.unpack(header), b"OK")
    assert record_fingerprint(b"s" + header + b"OK") is None
    assert record_fingerprint(b"d" + reply) is None
    with pytest.raises(RecordError, match="shorter"):
        decode_record(b"S" + header)
    with pytest.raises(ValueError, match="8 bytes"):
        datagram_record(reply, b"short")


# -- against a real agent and redis-server --------------------------------------------------


async def test_a_colliding_request_is_refused_not_answered_with_the_other_reply(
    raw_agent, cluster_redis
) -> None:
    """The first client's retries still get its answer; the second client's request with the
    same id gets ERROR and is applied nowhere (before: it got "OK" and k2 was never set)."""
    agent, rpc = await raw_agent()
    r = cluster_redis.client()
    first = await rpc(Op.INCRBY, IncrBy(b"k1", 5), request_id=RID)
    assert first.header.status == Status.OK and first.body == IntReply(5)
    other = await rpc(Op.INCRBY, IncrBy(b"k2", 7), request_id=RID)
    assert other.header.status == Status.ERROR and "collision" in other.body.message
    assert r.get(b"k2") is None
    again = await rpc(Op.INCRBY, IncrBy(b"k1", 5), request_id=RID, flags=Flag.RETRY)
    assert again.body == IntReply(5) and r.get(b"k1") == b"5"
    counters = agent.stats.snapshot().counters
    assert counters["dedup_collisions"] == 1 and counters["dedup_hits"] == 1
    # A read with a known id is another request too: refused, not answered with k1's reply.
    read = await rpc(Op.GET, Get(b"k1"), request_id=RID)
    assert read.header.status == Status.ERROR


async def test_a_collision_is_caught_by_the_record_when_the_window_forgot(
    raw_agent, cluster_redis
) -> None:
    agent, rpc = await raw_agent(dedup_entries=1, dedup_per_client=1)
    r = cluster_redis.client()
    assert (await rpc(Op.SET, Set(b"a", b"mine"), request_id=RID)).header.status == Status.OK
    await rpc(Op.GET, Get(b"evict"), request_id=RID + 1000)
    assert agent.dedup.get(RID) is None  # only the record in Redis knows RID now
    other = await rpc(Op.MSET, MSet(((b"{b}1", b"x"),)), request_id=RID)
    assert other.header.status == Status.ERROR and "collision" in other.body.message
    assert r.get(b"{b}1") is None
    # The record is still the first request's: its retry is answered, not applied again.
    retry = await rpc(Op.SET, Set(b"a", b"mine"), request_id=RID, flags=Flag.RETRY)
    assert retry.header.status == Status.OK
    assert agent.stats.snapshot().counters["dedup_collisions"] == 1


async def test_two_clients_with_the_same_id_and_counter_both_get_their_own_answers(
    cluster_redis, agent_factory
) -> None:
    """The worst case, forced: same client id and same counter start. Before, the second
    client's write "succeeded" from the first one's record; now it is refused (a ServerError
    whose outcome is known: nothing was applied) and the first client is unaffected."""
    agent = await agent_factory(cluster_redis)
    r = cluster_redis.client()
    async with (
        AsyncClient(agent.address, KS, client_id=0xABCD) as one,
        AsyncClient(agent.address, KS, client_id=0xABCD) as two,
    ):
        two._counter = one._counter  # what two random draws may give
        assert await one.incrby("n1", 3) == 3
        with pytest.raises(ServerError) as err:
            await two.incrby("n2", 4)
        assert err.value.status == Status.ERROR and not err.value.outcome_unknown
        assert r.get("n2") is None
        # In this forced lockstep every next id collides again; the first client never
        # notices (random counter starts make such overlaps short, see D21).
        assert await one.incrby("n1", 1) == 4
        with pytest.raises(ServerError):
            await two.incrby("n2", 1)
        assert r.get("n2") is None and r.get("n1") == b"4"


def test_client_counters_start_at_random() -> None:
    starts = {AsyncClient(("127.0.0.1", 9), KS, client_id=1)._counter for _ in range(8)}
    assert len(starts) > 1
