"""An agent finds the reserved keys' slot tags before it serves, not at its first migration
(issue #14: found there, they held a migration target's loop ~0.5 s at its CPU budget, and
with it every client of the first wave's slots)."""

from __future__ import annotations

from netmigrate.agent import reserved


async def test_the_slot_tags_are_found_when_the_agent_starts(cluster_redis, agent_factory) -> None:
    reserved._slot_tags.cache_clear()
    await agent_factory(cluster_redis, initial_slots=frozenset())
    assert reserved._slot_tags.cache_info().currsize == 1
