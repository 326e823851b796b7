"""MigrationStore's group commit, on a real Redis: concurrent changes share one MULTI/EXEC
(bitmap from the table plus every pending override, each ``then`` in order), a failed write
fails every caller and changes nothing, neither in memory nor in Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from netmigrate.agent.config import RedisTarget, parse_redis_url
from netmigrate.agent.migration_store import (
    MigrationRecord,
    MigrationStore,
    SlotRecord,
    StoreDataLost,
)
from netmigrate.agent.reserved import AGENT_ALIVE_KEY, AGENT_STATE_KEY, MIGRATIONS_KEY
from netmigrate.agent.resp import ReplyError
from netmigrate.agent.slots import SlotState, SlotTable


def execs(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


def owned_in_redis(client: redis.Redis) -> list[int]:
    raw = client.hget(AGENT_STATE_KEY, b"owned")
    return SlotTable.from_owned_bitmap(raw).slots_in(SlotState.OWNED)


@pytest_asyncio.fixture
async def aclient(cluster_redis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host=cluster_redis.host, port=cluster_redis.port)
    try:
        yield client
    finally:
        await client.aclose()


#: Writes through redis-py's pipeline, or over the store's own raw RESP connection.
BACKENDS = pytest.mark.parametrize("raw", [False, True], ids=["redis-py", "raw"])


def target_of(server, username: str | None = None, password: str | None = None) -> RedisTarget:  # type: ignore[no-untyped-def]
    auth = f"{username}:{password}@" if username else ""
    return parse_redis_url(f"redis://{auth}{server.host}:{server.port}")


@BACKENDS
async def test_concurrent_changes_share_one_write(cluster_redis, aclient, raw: bool) -> None:
    sync = cluster_redis.client()
    table = SlotTable(range(8))
    store = MigrationStore(
        aclient, 50000, 1, table, redis_target=target_of(cluster_redis) if raw else None
    )
    order: list[str] = []

    def enter(name: str, slot: int, state: SlotState) -> Any:
        def then() -> None:
            order.append(name)
            table.set_state([slot], state)

        return then

    before = execs(sync)
    mrec = MigrationRecord("m", 2, "h:1", "", "s:2", [(0, 7)], 10, 0, 4)
    await asyncio.gather(
        store.persist(
            slots={0: SlotRecord(0, "out", 2, "done", "m")},
            owned={0: False},
            then=enter("a", 0, SlotState.MOVED),
        ),
        store.persist(
            slots={1: SlotRecord(1, "out", 2, "starting", "m")},
            then=lambda: order.append("b"),
        ),
        store.persist(
            slots={9: SlotRecord(9, "in", 2, "cleanup")},
            owned={9: True},
            then=enter("c", 9, SlotState.OWNED),
        ),
        # A later change of the same slot wins: slot 1 ends "copying".
        store.persist(slots={1: SlotRecord(1, "out", 2, "copying", "m")}, migration=mrec),
    )
    assert execs(sync) - before == 1 and store.writes == 1  # one MULTI/EXEC for all four
    assert order == ["a", "b", "c"]  # each caller's then, in the order they asked
    assert owned_in_redis(sync) == [1, 2, 3, 4, 5, 6, 7, 9]
    records = await store.load_slots()
    assert {s: r.phase for s, r in records.items()} == {0: "done", 1: "copying", 9: "cleanup"}
    assert (await store.load_migrations())["m"] == mrec

    # Sequential changes are separate writes, and a delete and a write of other slots mix.
    await store.persist(slots={9: None, 2: SlotRecord(2, "out", 2, "starting", "m")})
    assert set(await store.load_slots()) == {0, 1, 2}
    assert store.writes == 2
    store.close()


@BACKENDS
async def test_a_failed_write_fails_every_caller_and_changes_nothing(
    cluster_redis, aclient, raw: bool
) -> None:
    """A user without HSET: Redis refuses the queued command, so EXEC aborts the whole
    transaction (nothing applied); after the permission is back the store works again."""
    sync = cluster_redis.client()
    table = SlotTable(range(4))
    store = MigrationStore(aclient, 50000, 1, table)
    await store.persist(owned={3: True}, slots={3: SlotRecord(3, "out", 2, "starting", "m")})
    bitmap = sync.hget(AGENT_STATE_KEY, b"owned")
    user, password = f"nm-store-{secrets.token_hex(4)}", secrets.token_hex(8)
    sync.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"])
    sync.execute_command("ACL", "SETUSER", user, "+@all", "-hset")
    limited = redis.asyncio.Redis(
        host=cluster_redis.host, port=cluster_redis.port, username=user, password=password
    )
    try:
        failing = MigrationStore(
            limited,
            50000,
            1,
            table,
            redis_target=target_of(cluster_redis, user, password) if raw else None,
        )
        ran: list[int] = []
        results = await asyncio.gather(
            failing.persist(
                slots={0: SlotRecord(0, "out", 2, "done", "m")},
                owned={0: False},
                then=lambda: (ran.append(0), table.set_state([0], SlotState.MOVED)),
            ),
            failing.persist(slots={3: None}, then=lambda: ran.append(3)),
            failing.persist(
                owned={5: True}, then=lambda: (ran.append(5), table.set_state([5], SlotState.OWNED))
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, redis.ResponseError | ReplyError) for r in results), results
        assert failing.writes == 1  # one shared write, and it failed for all three
        assert ran == []  # no then ran: memory is as before
        assert table.slots_in(SlotState.OWNED) == [0, 1, 2, 3]
        assert sync.hget(AGENT_STATE_KEY, b"owned") == bitmap  # Redis is as before
        assert set(await store.load_slots()) == {3}

        # The writer is not stuck: once HSET is allowed, the same store writes.
        sync.execute_command("ACL", "SETUSER", user, "+hset")
        await failing.persist(
            owned={0: False}, then=lambda: table.set_state([0], SlotState.NOT_OWNED)
        )
        assert owned_in_redis(sync) == [1, 2, 3]
    finally:
        failing.close()
        await limited.aclose()
        sync.acl_deluser(user)


async def test_a_failing_then_fails_only_its_caller(cluster_redis, aclient) -> None:
    table = SlotTable(range(4))
    store = MigrationStore(aclient, 50000, 1, table)

    def broken() -> None:
        raise RuntimeError("bug in a callback")

    ran: list[str] = []
    results = await asyncio.gather(
        store.persist(slots={1: SlotRecord(1, "out", 2, "starting")}, then=broken),
        store.persist(slots={2: SlotRecord(2, "out", 2, "starting")}, then=lambda: ran.append("2")),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert ran == ["2"]
    assert set(await store.load_slots()) == {1, 2}  # both were written


async def test_a_cancelled_caller_still_gets_its_change_applied_in_memory(
    cluster_redis, aclient
) -> None:
    """Cancelling a caller does not withdraw a change already queued: if it is written,
    its then runs, so memory never lags behind what Redis holds."""
    table = SlotTable(range(4))
    store = MigrationStore(aclient, 50000, 1, table)
    task = asyncio.create_task(
        store.persist(
            slots={1: SlotRecord(1, "out", 2, "done", "m")},
            owned={1: False},
            then=lambda: table.set_state([1], SlotState.MOVED),
        )
    )
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.persist()  # the next write runs after the first one finished
    assert table.state(1) == SlotState.MOVED
    assert owned_in_redis(cluster_redis.client()) == [0, 2, 3]
    assert (await store.load_slots())[1].phase == "done"
    assert await aclient.hlen(MIGRATIONS_KEY) == 0


@BACKENDS
async def test_a_store_guarded_by_the_liveness_key_writes_nothing_once_it_is_gone(
    cluster_redis, aclient, raw: bool
) -> None:
    """#12.8: the target's Redis restarted without its data while slots migrated in; the
    agent's admin connection reconnected by itself, and completing a slot wrote ownership into
    the empty Redis before the periodic check noticed the loss (a slot owned by nobody). A
    guarded store refuses any write once the liveness key is gone, and says so at once."""
    sync = cluster_redis.client()
    sync.set(AGENT_ALIVE_KEY, b"1")
    table = SlotTable(range(4))
    store = MigrationStore(
        aclient,
        50000,
        1,
        table,
        redis_target=target_of(cluster_redis) if raw else None,
        alive_key=AGENT_ALIVE_KEY,
    )
    lost: list[int] = []
    store.on_lost = lambda: lost.append(1)
    await store.persist(slots={1: SlotRecord(1, "in", 2, "migrating")})
    assert set(await store.load_slots()) == {1}

    sync.delete(AGENT_ALIVE_KEY)  # what a restart without persistence leaves, and FLUSHALL
    ran: list[int] = []
    with pytest.raises(StoreDataLost, match="nothing was written"):
        await store.persist(
            slots={1: SlotRecord(1, "in", 2, "cleanup")},
            owned={4: True},
            then=lambda: ran.append(1),
        )
    assert ran == [] and lost == [1]
    assert (await store.load_slots())[1].phase == "migrating"
    assert sync.hget(AGENT_STATE_KEY, b"owned") is None  # no ownership bitmap was written
    store.close()


async def test_a_loss_between_the_check_and_exec_aborts_the_write(cluster_redis, aclient) -> None:
    """The liveness key is WATCHed: a loss after it was found present still aborts EXEC."""
    sync = cluster_redis.client()
    sync.set(AGENT_ALIVE_KEY, b"1")
    store = MigrationStore(aclient, 50000, 1, SlotTable(range(4)), alive_key=AGENT_ALIVE_KEY)
    queue = store._queue

    def lose_then_queue(*args: Any) -> None:
        sync.delete(AGENT_ALIVE_KEY)  # another connection, after WATCH and EXISTS
        queue(*args)

    store._queue = lose_then_queue  # type: ignore[method-assign]
    with pytest.raises(StoreDataLost):
        await store.persist(owned={5: True}, slots={5: SlotRecord(5, "in", 2, "cleanup")})
    assert await store.load_slots() == {}
    assert sync.hget(AGENT_STATE_KEY, b"owned") is None
