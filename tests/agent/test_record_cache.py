"""The handover's record cache (``agent.source.records``) against a real Redis: each wave gets
every live record of its slots, a record is read from Redis once while it lives, a record that
is gone is no longer handed over, and a key recorded again after its record expired is read
again (its answer may differ)."""

from __future__ import annotations

import asyncio

from netmigrate.agent.config import RedisTarget
from netmigrate.agent.dedup import fingerprint
from netmigrate.agent.reserved import request_id_key
from netmigrate.agent.source.keys import SourceKeys
from netmigrate.agent.source.records import RecordCache
from netmigrate.protocol.codec import IncrBy, IntReply, decode, encode_request
from netmigrate.protocol.constants import HEADER_LEN, Op

RID = 7 << 32


def incr_record(slot: int, rid: int, answer: int) -> bytes:
    request = encode_request(Op.INCRBY, rid, 50000, slot, IncrBy(b"k", 1))
    return b"I" + request[:HEADER_LEN] + fingerprint(request) + b"%d" % answer


def answers(writes) -> dict[int, int]:  # type: ignore[no-untyped-def]
    return {w.request_id: decode(w.reply).body.value for w in writes}


async def test_records_are_read_once_and_again_after_they_expire(redis_server) -> None:
    server = redis_server(cluster=True)
    server.assign_all_slots()
    r = server.client()
    for i in range(50):  # other slots' records, and one that is not a record at all
        r.set(request_id_key(RID + 100 + i), incr_record(900 + i, RID + 100 + i, 1), px=60_000)
    r.set(request_id_key(RID + 1), incr_record(5, RID + 1, 10), px=60_000)
    r.set(request_id_key(RID + 2), incr_record(5, RID + 2, 20), px=300)
    r.set(request_id_key(RID + 3), b"Zjunk", px=60_000)
    keys = SourceKeys(RedisTarget(port=server.port))
    cache = RecordCache(keys)
    try:
        found = await cache.writes_of([5, 6])
        assert answers(found[5]) == {RID + 1: 10, RID + 2: 20} and found[6] == []
        assert cache.reads == 53
        # RID + 2 near the end of its life (< 300 ms) is still the record read: not read again.
        await asyncio.sleep(0.2)
        found = await cache.writes_of([5])
        assert answers(found[5]) == {RID + 1: 10, RID + 2: 20}
        assert cache.reads == 53
        # Nothing new: nothing is read; a new record of a wanted slot is.
        r.set(request_id_key(RID + 4), incr_record(6, RID + 4, 40), px=60_000)
        found = await cache.writes_of([5, 6])
        assert answers(found[5]) == {RID + 1: 10, RID + 2: 20}
        assert answers(found[6]) == {RID + 4: 40}
        assert cache.reads == 54
        # One record gone, one expired and written again with another answer.
        r.delete(request_id_key(RID + 1))
        await asyncio.sleep(0.2)
        r.set(request_id_key(RID + 2), incr_record(5, RID + 2, 21), px=60_000)
        found = await cache.writes_of([5])
        assert answers(found[5]) == {RID + 2: 21}
        assert cache.reads == 55
        assert isinstance(decode(found[5][0].reply).body, IntReply)
    finally:
        keys.close()
