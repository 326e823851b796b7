"""Issue #12, item 5: a slot moved on before its first migration finalized does not wedge the
source. A -> B of two slots (not finalized), B -> C of one of them, A's finalize, then C -> A
of that slot: A's finalize deletes its stale copies of both slots, and A can take the slot back
from C, with C's value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from migration_helpers import KEYSPACE, agent_config, keys_in

from netmigrate import migration
from netmigrate.agent.app import Agent
from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions
from netmigrate.migration.model import MigrationError

MOVED_ON, STAYED = 905, 906
OPTS = MigrationOptions(batch=50, rate=0, grace=0, poll=0.05)


@pytest_asyncio.fixture
async def third_redis(redis_server_session) -> Any:  # type: ignore[no-untyped-def]
    r = redis_server_session(cluster=True)
    r.assign_all_slots()
    return r


@pytest_asyncio.fixture
async def agents(redises, third_redis) -> AsyncIterator[list[Agent]]:
    made: list[Agent] = []
    try:
        for sid, redis, slots in (
            (1, redises[0], frozenset(range(16384))),
            (2, redises[1], frozenset()),
            (3, third_redis, frozenset()),
        ):
            agent = Agent(agent_config(redis, sid, slots))
            await agent.start()
            made.append(agent)
        yield made
    finally:
        for agent in made:
            await agent.stop()


def ep(agent: Agent, sid: int) -> AgentEndpoint:
    return AgentEndpoint(sid, f"127.0.0.1:{agent.control_port}")


def ks(agent: Agent) -> KeyspaceRef:
    host, port = agent.address
    return KeyspaceRef(KEYSPACE, host, port)


async def test_a_slot_moved_on_before_finalize_does_not_wedge_the_source(
    agents, redises, third_redis
) -> None:
    a, b, c = agents
    ra, rc = redises[0].client(), third_redis.client()
    moved_on, stayed = keys_in(MOVED_ON, 5), keys_in(STAYED, 5)
    for k in moved_on + stayed:
        ra.set(k, b"a")
    first = await migration.run(
        ep(a, 1), ep(b, 2), [MOVED_ON, STAYED], keyspace=ks(b), options=OPTS, finalize=False
    )
    assert first.state == "DONE"
    second = await migration.run(ep(b, 2), ep(c, 3), [MOVED_ON], keyspace=ks(c), options=OPTS)
    assert second.state == "FINALIZED"
    rc.set(moved_on[0], b"c")  # a write at C, the owner now

    fin = await migration.finalize(ep(a, 1), ep(b, 2), first.migration_id, keyspace=ks(b), grace=0)
    assert fin.slots_finalized == 2
    assert all(ra.get(k) is None for k in moved_on + stayed)

    back = await migration.run(ep(c, 3), ep(a, 1), [MOVED_ON], keyspace=ks(a), options=OPTS)
    assert back.state == "FINALIZED", back.message
    assert ra.get(moved_on[0]) == b"c" and ra.get(moved_on[1]) == b"a"
    assert rc.get(moved_on[0]) is None


async def test_a_target_that_lost_a_slot_without_moving_it_keeps_the_keys_here(
    agents, redises
) -> None:
    a, b, _ = agents
    ra = redises[0].client()
    keys = keys_in(STAYED, 5)
    for k in keys:
        ra.set(k, b"a")
    first = await migration.run(
        ep(a, 1), ep(b, 2), [STAYED], keyspace=ks(b), options=OPTS, finalize=False
    )
    assert first.state == "DONE"
    # B's Redis loses everything and a fresh agent takes B's control address: it owns nothing
    # and has migrated nothing out, so A's stale copy is the last one left.
    port = b.control_port
    await b.stop()
    redises[1].client().flushall()
    fresh = Agent(agent_config(redises[1], 2, frozenset(), control=("127.0.0.1", port)))
    await fresh.start()
    agents[1] = fresh
    with pytest.raises(MigrationError, match="does not own"):
        await migration.finalize(
            ep(a, 1), ep(fresh, 2), first.migration_id, keyspace=ks(fresh), grace=0
        )
    assert all(ra.get(k) == b"a" for k in keys)
