"""Check mode on a migration that exists already: what running it again would do."""

from __future__ import annotations

import asyncio

from migration_helpers import KEYSPACE, SOURCE, TARGET, keys_in, until

from netmigrate import migration
from netmigrate.migration import MigrationOptions


async def test_plan_after_abort_lists_the_slots_left_and_run_finishes_them(pair) -> None:
    p = await pair()
    slots = list(range(600, 610))
    a = p.redis_a.client()
    for k in (k for s in slots for k in keys_in(s, 10)):
        a.set(k, b"v")
    # 11 tokens a slot at 20 per second: about two slots a second, so the abort finds some left.
    opts = MigrationOptions(batch=5, parallel=1, rate=20, grace=0, poll=0.05)
    run = asyncio.create_task(
        migration.run(
            p.source_ep, p.target_ep, slots, keyspace=p.keyspace, options=opts, finalize=False
        )
    )
    mid = migration.migration_id_for(KEYSPACE, SOURCE, TARGET, slots)
    await until(lambda: mid in p.source.source._migrations)
    m = p.source.source._migrations[mid]
    await until(lambda: sum(r.phase == "done" for r in m.slots.values()) >= 2)
    aborted = await migration.abort(p.source_ep, mid)
    assert (await run).state == "ABORTED"
    done = {s.slot for s in aborted.slots if s.outcome == "done"}
    left = sorted(set(slots) - done)
    assert done and left

    planned = await migration.plan(p.source_ep, p.target_ep, slots, keyspace=p.keyspace)
    assert planned.migration_id == mid and planned.changed
    assert [s for lo, hi in planned.move for s in range(lo, hi + 1)] == left
    assert planned.slots_to_move == len(left) and planned.keys == 10 * len(left)
    assert str(len(left)) in planned.message and "aborted" in planned.message
    # Check mode changed nothing: the migration is still aborted, the slots still at the source.
    (still,) = await migration.status(p.source_ep, mid)
    assert still.state == "ABORTED" and still.slots_done == len(done)

    finished = await migration.run(p.source_ep, p.target_ep, slots, keyspace=p.keyspace)
    assert finished.changed and finished.state == "FINALIZED"
    b = p.redis_b.client()
    assert all(b.exists(k) for s in slots for k in keys_in(s, 10))
    assert not any(a.exists(k) for s in slots for k in keys_in(s, 10))
