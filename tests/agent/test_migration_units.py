"""Units of the agent's migration code: slot states and admission, per-slot reserved keys,
the persisted migration records, the dedup window's slot index, TTL mapping, rate limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.migration_store import MigrationRecord, MigrationStore, SlotRecord
from netmigrate.agent.reserved import (
    RESERVED_SLOT,
    dirty_key,
    is_reserved,
    marker_key,
    slot_tag,
)
from netmigrate.agent.restore import ttl_from_pttl
from netmigrate.agent.slots import Admission, SlotState, SlotTable
from netmigrate.agent.source.rate import RateLimiter
from netmigrate.protocol.constants import Flag, Op
from netmigrate.protocol.slot import key_slot
from netmigrate.protocol.slotset import to_ranges

DR = int(Flag.DOUBLE_READ)


def test_admission_by_state() -> None:
    t = SlotTable()
    t.set_state([1], SlotState.OWNED)
    t.set_state([2], SlotState.MIGRATING_OUT)
    t.set_state([3], SlotState.FROZEN)
    t.set_state([4], SlotState.MOVED)
    t.set_state([5], SlotState.MIGRATING_IN)
    for op in (Op.GET, Op.SET, Op.MGET, Op.INCRBY):
        assert t.admit(1, op, 0) is Admission.SERVE
        assert t.admit(2, op, 0) is Admission.SERVE  # not frozen yet
        assert t.admit(5, op, 0) is Admission.TARGET
        assert t.admit(5, op, DR) is Admission.TARGET
        assert t.admit(0, op, DR) is Admission.WRONG_OWNER
    for slot in (3, 4):  # frozen or moved: double reads only, writes never
        assert t.admit(slot, Op.GET, DR) is Admission.SERVE
        assert t.admit(slot, Op.MGET, DR) is Admission.SERVE
        assert t.admit(slot, Op.GET, 0) is Admission.WRONG_OWNER
        assert t.admit(slot, Op.SET, DR) is Admission.WRONG_OWNER
        assert t.admit(slot, Op.DEL, 0) is Admission.WRONG_OWNER
    # The persisted ownership bit follows who owns the slot, overrides win.
    assert t.owner_ranges() == [(1, 3)] and t.owner_count() == 3
    bits = SlotTable.from_owned_bitmap(t.owned_bitmap({3: False, 5: True}))
    assert bits.slots_in(SlotState.OWNED) == [1, 2, 5]
    assert to_ranges([5, 1, 2, 3, 9]) == [(1, 3), (5, 5), (9, 9)]


def test_per_slot_reserved_keys_live_in_their_slot() -> None:
    for slot in (0, 1, 777, RESERVED_SLOT, 16383):
        assert key_slot(slot_tag(slot)) == slot
        assert key_slot(dirty_key(slot)) == slot == key_slot(marker_key(slot))
        assert is_reserved(dirty_key(slot)) and is_reserved(marker_key(slot))
    assert len({slot_tag(s) for s in range(16384)}) == 16384
    assert not is_reserved(b"x__netmigrate__:{a}") and not is_reserved(b"{__netmigrate__}")


def test_ttl_mapping() -> None:
    assert ttl_from_pttl(-1) == 0  # no expiry
    assert ttl_from_pttl(0) == 1  # about to expire: not immortal
    assert ttl_from_pttl(1234) == 1234


def test_dedup_slot_index_and_install() -> None:
    w = DedupWindow(max_entries=3, max_per_client=10, max_bytes=1000)
    a = w.begin(1, 7, None)
    w.complete(a, b"r1")
    w.begin(2, 8, None)
    asyncio.run(w.watch_gradually([7]))
    assert [e.request_id for e in w.entries_of(7)] == [1]
    w.complete(w.begin(3, 7, None), b"r3")
    assert sorted(e.request_id for e in w.entries_of(7)) == [1, 3]
    w.begin(4, 9, None)  # evicts the oldest (1)
    assert [e.request_id for e in w.entries_of(7)] == [3]
    assert w.install(5, 7, b"r5") and not w.install(5, 7, b"again")
    assert w.get(5).reply == b"r5"
    w.unwatch([7])
    with pytest.raises(KeyError):
        w.entries_of(7)


def test_records_round_trip_and_validation() -> None:
    r = SlotRecord(3, "out", 2, "copying", "m", 1.5, 2.5, 0, 10, 20, 1)
    assert SlotRecord.from_json(r.to_json()) == r
    with pytest.raises(ValueError, match="phase"):
        SlotRecord(3, "in", 2, "copying")
    m = MigrationRecord("m", 2, "h:1", "", "s:2", [(0, 3), (9, 9)], 10, 0, 2)
    back = MigrationRecord.from_json(m.to_json())
    assert back == m and back.slot_set() == [0, 1, 2, 3, 9]
    assert back.same_request(m)
    assert not back.same_request(MigrationRecord("m", 3, "h:1", "", "s:2", [(0, 3)], 1, 0, 1))


async def test_store_writes_bitmap_and_records_atomically(cluster_redis) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis(host=cluster_redis.host, port=cluster_redis.port)
    try:
        table = SlotTable(range(10))
        store = MigrationStore(client, 50000, 1, table)
        rec = SlotRecord(4, "out", 2, "done", "m")
        await store.persist(
            slots={4: rec},
            owned={4: False},
            then=lambda: table.set_state([4], SlotState.MOVED),
        )
        assert await store.load_slots() == {4: rec}
        raw = await client.hget(b"{__netmigrate__}:agent", b"owned")
        assert SlotTable.from_owned_bitmap(raw).slots_in(SlotState.OWNED) == [
            0,
            1,
            2,
            3,
            5,
            6,
            7,
            8,
            9,
        ]
        # Two changes in a row: the second bitmap includes the first (computed under the lock).
        await asyncio.gather(
            store.persist(owned={0: False}, then=lambda: table.set_state([0], SlotState.NOT_OWNED)),
            store.persist(owned={1: False}, then=lambda: table.set_state([1], SlotState.NOT_OWNED)),
        )
        raw = await client.hget(b"{__netmigrate__}:agent", b"owned")
        assert SlotTable.from_owned_bitmap(raw).slots_in(SlotState.OWNED) == [2, 3, 5, 6, 7, 8, 9]
        await store.persist(slots={4: None})
        assert await store.load_slots() == {}
    finally:
        await client.aclose()


async def test_rate_limiter_paces_keys() -> None:
    limiter = RateLimiter(400)
    start = time.monotonic()
    for _ in range(6):
        await limiter.take(100)  # 600 keys at 400/s, the first 400 from the full bucket
    assert time.monotonic() - start >= 0.49  # a lower bound: a busy machine only adds to it
    await asyncio.wait_for(RateLimiter(0).take(10**9), 5)  # unlimited never waits for tokens


def test_slot_record_json_is_what_json_writes_and_evolve_checks() -> None:
    import json
    from dataclasses import fields

    for r in (
        SlotRecord(3, "out", 2, "copying", 'm "quoted" \u00e9\n', 1.5, 2.25, 0, 10, 20, 1),
        SlotRecord(16383, "in", 7, "cleanup", "", 0, 0.0, 1.7e9),
    ):
        # Every field, as json.dumps would write it (a field added later must be added too).
        assert json.loads(r.to_json()) == {f.name: getattr(r, f.name) for f in fields(SlotRecord)}
        assert SlotRecord.from_json(r.to_json()) == r
    r = SlotRecord(3, "out", 2, "copying", "m")
    done = r.evolve(phase="done", finished=5.0)
    assert (done.phase, done.finished, r.phase, r.finished) == ("done", 5.0, "copying", 0.0)
    with pytest.raises(ValueError, match="phase"):
        r.evolve(phase="cleanup")  # not a phase of role "out"
    with pytest.raises(TypeError, match="nope"):
        r.evolve(nope=1)


def test_slot_record_json_text_is_exact_with_shared_and_signed_values() -> None:
    """The memoized parts of ``to_json`` (a wave's shared phase, id and timestamps) write the
    same bytes as json.dumps, zeros of either sign included."""
    import json
    from dataclasses import asdict

    now = 1796697448.2927835
    records = [
        SlotRecord(s, "out", 2, "copying", "wave-\u00e9", now, now, f, 1, 2, 0, 3)
        for s in range(3)
        for f in (0.0, -0.0, now, 1e-300)
    ]
    for r in records * 2:  # the second pass is served from the caches
        assert r.to_json() == json.dumps(asdict(r), separators=(",", ":")).encode()
