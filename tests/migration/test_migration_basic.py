"""A whole migration at agent level: data, TTLs, ownership on both sides (persisted), finalize,
idempotence, and the controller's check mode. No switch: SLOT_START goes to the target."""

from __future__ import annotations

import asyncio

import pytest
from migration_helpers import SOURCE, TARGET, keys_in

from netmigrate import migration
from netmigrate.agent import slot_store
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.slots import SlotState
from netmigrate.migration import MigrationError, MigrationOptions


async def test_run_moves_slots_and_finalize_deletes_them_at_the_source(pair) -> None:
    p = await pair()
    ra, rb = p.redis_a.client(), p.redis_b.client()
    moving = [100, 101, 5000, 16383]
    staying = [102, 7000]
    for slot in moving + staying:
        for i, k in enumerate(keys_in(slot, 30)):
            ra.set(k, b"v%d" % i)
    ttl_key = keys_in(5000, 1, "ttl")[0]
    ra.set(ttl_key, b"expiring", px=600_000)
    ra.hset(keys_in(101, 1, "hash")[0], mapping={"a": "1", "b": "2"})
    empty = 9000  # a slot without keys moves too
    all_moved = [*moving, empty]

    seen = []
    result = await migration.run(
        p.source_ep,
        p.target_ep,
        all_moved,
        keyspace=p.keyspace,
        options=MigrationOptions(batch=7, parallel=2, grace=0, poll=0.05),
        progress=seen.append,
    )
    assert result.state == "FINALIZED" and result.changed
    assert result.slots_done == 5 and result.keys_copied == 4 * 30 + 2
    assert {s.slot: s.outcome for s in result.slots} == dict.fromkeys(all_moved, "finalized")
    assert all(s.finished >= s.frozen >= s.started > 0 for s in result.slots)
    assert result.finalize is not None and result.finalize.keys_deleted == 4 * 30 + 2
    assert seen and seen[-1].slots_done == 5

    # The target has every moved key (values, types, TTLs); the source only the others.
    for slot in moving:
        for i, k in enumerate(keys_in(slot, 30)):
            assert rb.get(k) == b"v%d" % i
            assert not ra.exists(k)
    assert 590_000 < rb.pttl(ttl_key) <= 600_000
    assert rb.hgetall(keys_in(101, 1, "hash")[0]) == {b"a": b"1", b"b": b"2"}
    for slot in staying:
        assert all(ra.exists(k) and not rb.exists(k) for k in keys_in(slot, 30))

    # Ownership moved on both sides, in memory and persisted.
    for slot in all_moved:
        assert p.source.table.state(slot) == SlotState.NOT_OWNED
        assert p.target.table.state(slot) == SlotState.OWNED
    assert p.source.table.state(102) == SlotState.OWNED
    for agent, owner in ((p.source, False), (p.target, True)):
        persisted = await slot_store.load(agent._admin)
        assert persisted is not None
        assert all(persisted.table.is_owner(s) is owner for s in all_moved)
        assert persisted.table.is_owner(102) is not owner
    target_records = await MigrationStore(p.target._admin, 0, TARGET, p.target.table).load_slots()
    assert target_records == {}  # bookkeeping dropped at the target
    assert not rb.keys(b"__netmigrate__:*")  # no dirty set or marker left behind

    # Running it again changes nothing and says so.
    again = await migration.run(p.source_ep, p.target_ep, all_moved, keyspace=p.keyspace)
    assert not again.changed and again.state == "FINALIZED"
    assert "nothing to do" in again.message
    (listed,) = await migration.status(p.source_ep, result.migration_id)
    assert listed.state == "FINALIZED" and listed.source_id == SOURCE


async def test_slots_moved_back_move_again_when_the_first_request_is_repeated(pair) -> None:
    """A->B, B->A, then A->B again: the repeated request is a new run of it (its derived id
    gets a generation suffix), not "finished already" while the data sits at A. The relay
    steers SLOT_START both ways, as the switch does."""
    p = await pair(relay=True)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slots = [200, 201]
    keys = keys_in(200, 10) + keys_in(201, 10)
    for k in keys:
        ra.set(k, b"x")
    opts = MigrationOptions(grace=0, poll=0.05)
    ks = p.keyspace
    first = await migration.run(p.source_ep, p.target_ep, slots, keyspace=ks, options=opts)
    back = await migration.run(p.target_ep, p.source_ep, slots, keyspace=ks, options=opts)
    assert first.changed and back.changed and back.state == "FINALIZED"
    assert all(ra.exists(k) and not rb.exists(k) for k in keys)

    again_id = f"{first.migration_id}.2"
    plan = await migration.plan(p.source_ep, p.target_ep, slots, keyspace=ks)
    assert plan.changed and plan.slots_to_move == 2 and plan.migration_id == again_id
    again = await migration.run(p.source_ep, p.target_ep, slots, keyspace=ks, options=opts)
    assert again.changed and again.state == "FINALIZED" and again.migration_id == again_id
    assert again.slots_done == 2 and again.keys_copied == len(keys)
    assert all(rb.exists(k) and not ra.exists(k) for k in keys)

    # Now the request is satisfied: repeating it (or the way back's check) changes nothing.
    fourth = await migration.run(p.source_ep, p.target_ep, slots, keyspace=ks, options=opts)
    assert not fourth.changed and fourth.migration_id == again_id
    plan = await migration.plan(p.source_ep, p.target_ep, slots, keyspace=ks)
    assert not plan.changed and plan.migration_id == again_id
    # An id the caller chose names one run: it is never renamed.
    mine = await migration.run(
        p.source_ep, p.target_ep, slots, keyspace=ks, options=opts, migration_id=first.migration_id
    )
    assert not mine.changed and mine.migration_id == first.migration_id


async def test_two_finalizes_at_once_delete_each_key_once(pair) -> None:
    """Several controllers may finish the same migration together (a re-run while the first
    run finalizes, an Ansible retry): the second finalize finds nothing left to do."""
    p = await pair()
    ra = p.redis_a.client()
    slots = [300, 301, 302]
    for s in slots:
        for k in keys_in(s, 20):
            ra.set(k, b"v")
    opts = MigrationOptions(grace=0, poll=0.05)
    moved = await migration.run(
        p.source_ep, p.target_ep, slots, keyspace=p.keyspace, options=opts, finalize=False
    )
    assert moved.state == "DONE"
    results = await asyncio.gather(
        *(
            migration.finalize(
                p.source_ep, p.target_ep, moved.migration_id, keyspace=p.keyspace, grace=0.3
            )
            for _ in range(2)
        )
    )
    # One of them did the work; the other found it done (not "changed", nothing deleted).
    assert sorted((r.slots_finalized, r.keys_deleted, r.changed) for r in results) == [
        (0, 0, False),
        (3, 60, True),
    ]
    (listed,) = await migration.status(p.source_ep, moved.migration_id)
    assert listed.state == "FINALIZED"
    assert not any(ra.exists(k) for s in slots for k in keys_in(s, 20))


async def test_check_mode_changes_nothing_and_refuses_unowned_slots(pair) -> None:
    p = await pair()
    ra = p.redis_a.client()
    for k in keys_in(10, 5):
        ra.set(k, b"x")
    planned = await migration.plan(p.source_ep, p.target_ep, [10, 11], keyspace=p.keyspace)
    assert planned.changed and planned.slots_to_move == 2 and planned.keys == 5
    assert planned.move == [(10, 11)] and not planned.refused
    assert p.source.table.state(10) == SlotState.OWNED
    assert await migration.status(p.source_ep) == []

    await migration.run(p.source_ep, p.target_ep, [10], keyspace=p.keyspace)
    same = await migration.plan(p.source_ep, p.target_ep, [10], keyspace=p.keyspace)
    assert not same.changed and "finalized" in same.message  # the same migration, finished
    # Slot 10 is the target's now: a new plan skips it; a slot neither owns is refused.
    p.source.table.set_state([12], SlotState.NOT_OWNED)
    planned = await migration.plan(p.source_ep, p.target_ep, [10, 11, 12], keyspace=p.keyspace)
    assert planned.skipped == [(10, 10)] and planned.move == [(11, 11)]
    assert planned.refused == [(12, 12)] and not planned.changed
    with pytest.raises(MigrationError, match="cannot move") as info:
        await migration.run(p.source_ep, p.target_ep, [11, 12], keyspace=p.keyspace)
    assert info.value.code == "FAILED_PRECONDITION"
    assert p.source.table.state(11) == SlotState.OWNED  # refused as a whole: nothing moved


async def test_wrong_target_identity_is_refused(pair) -> None:
    p = await pair()
    wrong = migration.AgentEndpoint(7, p.target_ep.control)
    with pytest.raises(MigrationError, match="is server 2"):
        await migration.run(p.source_ep, wrong, [1], keyspace=p.keyspace)
    assert p.source.table.state(1) == SlotState.OWNED
