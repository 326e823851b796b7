"""A target whose Redis cannot RESTORE the source's DUMPs (an older RDB version) is refused
before the first slot moves, with a message that says why (issue #12.6). Real redis-servers
and real agents; the target's report is what a Redis 6.2 behind it would say."""

from __future__ import annotations

import pytest
from migration_helpers import keys_in

from netmigrate import migration
from netmigrate.agent.redis_version import RedisVersion, rdb_version_of
from netmigrate.agent.slots import SlotState
from netmigrate.migration import MigrationError, MigrationOptions


async def test_agents_report_their_redis_and_its_rdb_version(pair) -> None:
    p = await pair()
    r = p.redis_a.client()
    version = r.info("server")["redis_version"]
    r.set(b"probe", b"x")
    expected = RedisVersion(version, rdb_version_of(r.dump(b"probe")))
    assert p.source.redis_version == expected and p.target.redis_version == expected
    assert 9 <= expected.rdb <= 12  # Redis 6.0 .. 7.4


async def test_a_target_with_an_older_rdb_version_is_refused_before_any_slot_moves(pair) -> None:
    p = await pair()
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slot = 321
    keys = keys_in(slot, 5)
    for k in keys:
        ra.set(k, b"v")
    assert p.source.redis_version is not None
    p.target.redis_version = RedisVersion("6.2.14", p.source.redis_version.rdb - 1)

    with pytest.raises(MigrationError, match=r"cannot RESTORE the DUMPs") as raised:
        await migration.run(
            p.source_ep,
            p.target_ep,
            [slot],
            keyspace=p.keyspace,
            options=MigrationOptions(grace=0, poll=0.05),
        )
    assert "Redis 6.2.14" in str(raised.value)
    assert p.source.table.state(slot) == SlotState.OWNED
    assert p.target.table.state(slot) == SlotState.NOT_OWNED
    assert all(ra.get(k) == b"v" for k in keys) and not rb.exists(*keys)
    assert p.source.source.counters["source_transitions_sent"] == 0
