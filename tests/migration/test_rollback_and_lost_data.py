"""Issue #12, items 6 (rollback) and 8 (lost data), with real agents and redis-servers (the
switch's steering modelled by the relay):

- a slot the target cannot take (its Redis refuses RESTORE) goes back to the source while the
  target holds no client write for it, instead of staying frozen with BUSY answers; resume
  moves it once the cause is gone;
- with a client write acknowledged at the target, the slot stays (readable) and the migration
  says why;
- the target's Redis loses its data mid-migration: the migration fails at once with an error
  naming the loss and Redis' run ids, and the slot (no write at the target) goes back;
- the source's Redis loses its data mid-migration: the migration fails at once, and the
  target never becomes the owner of a slot whose copy came from nothing.

Before these changes the first three left the slot frozen and in flight (FAILED after 30 s
of retries, or never), and the last one completed the migration from an empty Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from migration_helpers import KEYSPACE, keys_in, until

from netmigrate import migration
from netmigrate.agent.slots import SlotState
from netmigrate.client import AsyncClient
from netmigrate.migration import MigrationError, MigrationOptions

SLOT = 5151
SLOW = MigrationOptions(batch=2, rate=20, grace=0, poll=0.05)


@contextlib.contextmanager
def refusing_restore(redis: Any) -> Iterator[None]:
    """The target's Redis refuses RESTORE (what a module type it lacks, or a payload it
    cannot read, look like to the copy): every copy batch fails."""
    admin = redis.client()
    admin.execute_command("ACL", "SETUSER", "default", "-restore")
    try:
        yield
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")


def _slot_keys(redis: Any, slot: int) -> int:
    return int(redis.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


async def _failed(run: Any, timeout: float) -> MigrationError:
    with pytest.raises(MigrationError) as err:
        await asyncio.wait_for(run, timeout)
    return err.value


async def test_a_slot_the_target_cannot_restore_goes_back_to_the_source(pair) -> None:
    p = await pair(relay=True)
    p.source.source.slot_retry_seconds = 1.0
    ra = p.redis_a.client()
    for k in keys_in(SLOT, 20):
        ra.set(k, b"v1")
    opts = MigrationOptions(batch=5, grace=0, poll=0.05)
    with refusing_restore(p.redis_b):
        err = await _failed(
            migration.run(p.source_ep, p.target_ep, [SLOT], keyspace=p.keyspace, options=opts),
            20,
        )
    result = err.result
    assert result.state == "FAILED"
    assert result.slots_rolled_back == 1
    assert [s.outcome for s in result.slots if s.slot == SLOT] == ["rolled_back"]
    assert "rolled back to the source" in str(err), str(err)
    # The source serves the slot again; the target has nothing of it (keys, marker, record).
    assert p.source.table.state(SLOT) == SlotState.OWNED
    assert SLOT not in {r.slot for r in p.source.source.records()}
    assert p.target.table.state(SLOT) == SlotState.NOT_OWNED
    assert SLOT not in p.target.target._slots
    assert _slot_keys(p.redis_b, SLOT) == 0
    assert p.target.target.counters["target_slots_rolled_back"] == 1
    # Once the target can restore again, resume moves the slot after all.
    done = await asyncio.wait_for(
        migration.resume(
            p.source_ep,
            result.migration_id,
            target=p.target_ep,
            keyspace=p.keyspace,
            finalize=True,
            options=opts,
        ),
        30,
    )
    assert done.state == "DONE", done.message
    assert done.finalize is not None and done.finalize.keys_deleted == 20
    assert p.target.table.state(SLOT) == SlotState.OWNED
    assert _slot_keys(p.redis_b, SLOT) == 20


async def test_a_slot_with_a_write_at_the_target_stays_readable_and_says_why(pair) -> None:
    p = await pair(relay=True)
    p.source.source.slot_retry_seconds = 3.0
    ra = p.redis_a.client()
    keys = keys_in(SLOT, 20)
    for k in keys:
        ra.set(k, b"v1")
    incoming = p.target.target._slots
    with refusing_restore(p.redis_b):
        run = asyncio.create_task(
            migration.run(p.source_ep, p.target_ep, [SLOT], keyspace=p.keyspace, options=SLOW)
        )
        await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
        async with AsyncClient(p.service, KEYSPACE, deadline=5.0) as client:
            assert await client.set(keys[0], b"v2") is True  # acknowledged by the target
            err = await _failed(run, 30)
            assert "client writes were applied here" in str(err), str(err)
            assert err.result.slots_rolled_back == 0
            assert err.result.slots_failed == 1
            # Still readable, newest first: the target's write, the source's frozen copy.
            assert await client.get(keys[0]) == b"v2"
            assert await client.get(keys[1]) == b"v1"
    assert p.source.table.state(SLOT) == SlotState.FROZEN
    assert p.target.table.state(SLOT) == SlotState.MIGRATING_IN


async def test_target_redis_losing_its_data_fails_the_migration_and_gives_the_slot_back(
    pair,
) -> None:
    p = await pair(relay=True)
    ra = p.redis_a.client()
    for k in keys_in(SLOT, 60):
        ra.set(k, b"v1")
    incoming = p.target.target._slots
    run = asyncio.create_task(
        migration.run(p.source_ep, p.target_ep, [SLOT], keyspace=p.keyspace, options=SLOW)
    )
    await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
    p.redis_b.client().flushall()  # what a restart without persistence leaves
    err = await _failed(run, 15)  # at once, not after 30 s of retries
    message = str(err)
    assert "server 2: Redis lost its data (run_id " in message, message
    assert "rolled back to the source" in message, message
    assert err.result.slots_rolled_back == 1
    assert "Redis lost its data" in p.target.data_lost
    # One owner: the source again; the target owns nothing and keeps nothing in flight.
    assert p.source.table.state(SLOT) == SlotState.OWNED
    assert p.target.table.owner_count() == 0
    assert p.target.target.states() == []
    assert p.target.target.counters["target_slots_lost"] == 1


async def test_source_redis_losing_its_data_fails_the_migration_explicitly(pair) -> None:
    p = await pair(relay=True)
    ra = p.redis_a.client()
    for k in keys_in(SLOT, 60):
        ra.set(k, b"v1")
    incoming = p.target.target._slots
    run = asyncio.create_task(
        migration.run(p.source_ep, p.target_ep, [SLOT], keyspace=p.keyspace, options=SLOW)
    )
    await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
    ra.flushall()
    err = await _failed(run, 15)
    message = str(err)
    assert "server 1: Redis lost its data (run_id " in message, message
    # Nobody took the slot over from an empty copy: never two owners, and not the target.
    await asyncio.sleep(0.5)
    assert p.source.table.owner_count() == 0
    assert p.target.table.state(SLOT) != SlotState.OWNED


def _restart(server: Any) -> None:
    """Restart a redis-server with its own configuration (no persistence: its data is gone;
    its cluster slots stay in nodes.conf)."""
    server.stop()
    server.process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(server.dir / "redis.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            if server.client().ping():
                break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not come back"
            time.sleep(0.02)
    server.wait_cluster_ok()


async def test_target_redis_restarted_mid_migration(pair) -> None:
    """As the flush above, with a real restart: the agent notices it before its data
    connection serves again, and the error names two different run ids."""
    p = await pair(relay=True)
    ra = p.redis_a.client()
    for k in keys_in(SLOT, 60):
        ra.set(k, b"v1")
    incoming = p.target.target._slots
    run = asyncio.create_task(
        migration.run(p.source_ep, p.target_ep, [SLOT], keyspace=p.keyspace, options=SLOW)
    )
    await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
    before = p.target.redis_run_id
    await asyncio.to_thread(_restart, p.redis_b)
    err = await _failed(run, 15)
    message = str(err)
    assert f"server 2: Redis lost its data (run_id {before} -> " in message, message
    assert f"run_id {before} -> {before}" not in message
    assert err.result.slots_rolled_back == 1, message
    assert p.source.table.state(SLOT) == SlotState.OWNED
    assert p.target.table.owner_count() == 0
