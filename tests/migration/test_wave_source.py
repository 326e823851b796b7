"""Waves at the source: slots move several at a time; a failure in the middle of a wave sends
the slots concerned on alone (from their persisted phase) and every slot still ends wholly at
one side. Real agents, real Redis, the switch model (relay) over UDP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis
from migration_helpers import KEYSPACE, SOURCE, TARGET, agent_config, keys_in, until
from migration_relay import Relay

from netmigrate import migration
from netmigrate.agent.app import Agent
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.reserved import dirty_key, marker_key
from netmigrate.agent.slots import SlotState
from netmigrate.agent.source.waves import WAVE_KEYS, form_waves
from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions
from netmigrate.protocol.constants import Op


class LossyRelay(Relay):
    """The switch model, losing the next ``drops[(op, slot)]`` datagrams of that op and slot
    (before the switch acts on them)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.drops: dict[tuple[int, int], int] = {}

    def _steer(self, data: bytes, h, sender) -> None:  # type: ignore[no-untyped-def]
        left = self.drops.get((h.op, h.slot), 0)
        if left > 0:
            self.drops[(h.op, h.slot)] = left - 1
            return
        super()._steer(data, h, sender)


@pytest_asyncio.fixture
async def agents(redises) -> AsyncIterator[tuple[Agent, Agent, LossyRelay]]:
    a, b = redises
    target = Agent(agent_config(b, TARGET, frozenset()))
    source = Agent(agent_config(a, SOURCE, frozenset(range(16384))))
    relay = None
    try:
        await target.start()
        await source.start()
        relay = LossyRelay({TARGET: target.address, SOURCE: source.address}, SOURCE)
        yield source, target, relay
    finally:
        if relay is not None:
            relay.close()
        await source.stop()
        await target.stop()


def endpoints(source: Agent, target: Agent) -> tuple[AgentEndpoint, AgentEndpoint]:
    return (
        AgentEndpoint(SOURCE, f"127.0.0.1:{source.control_port}"),
        AgentEndpoint(TARGET, f"127.0.0.1:{target.control_port}"),
    )


def preload(client, slots: list[int], n: int) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    data = {k: b"%d-%d" % (s, i) for s in slots for i, k in enumerate(keys_in(s, n))}
    pipe = client.pipeline(transaction=False)
    for k, v in data.items():
        pipe.set(k, v)
    pipe.execute()
    return data


def test_waves_are_bounded_by_slots_and_keys() -> None:
    slots = list(range(10))
    assert form_waves(slots, [1] * 10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    big = WAVE_KEYS + 1
    # A slot with more keys than a wave holds goes alone; the key bound closes a wave early.
    counts = [10, big, 10, WAVE_KEYS - 20, 15, 5, 0]
    assert form_waves(slots[:7], counts, 8) == [[0], [1], [2, 3], [4, 5, 6]]
    assert form_waves([], [], 4) == []


async def test_lost_transitions_in_a_wave_fall_back_per_slot(agents, monkeypatch) -> None:
    from netmigrate.agent.source import transitions

    monkeypatch.setattr(transitions, "TRANSITION_ATTEMPTS", 2)
    monkeypatch.setattr(transitions, "TRANSITION_TIMEOUT", 0.05)
    source, target, relay = agents
    slots = list(range(700, 708))
    data = preload(source_redis(source), slots, 5)
    # Slot 702 loses its first START twice (the whole wave's attempts), slot 705 its COMPLETE.
    relay.drops = {(Op.SLOT_START, 702): 2, (Op.SLOT_COMPLETE, 705): 2}
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(batch=7, parallel=8, grace=0, poll=0.05)
    result = await migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts)
    assert result.state == "FINALIZED" and result.slots_done == len(slots)
    attempts = {s.slot: s.attempts for s in result.slots}
    assert attempts[702] >= 1 and attempts[705] >= 1  # went on alone
    assert all(attempts[s] == 0 for s in slots if s not in (702, 705))  # stayed in the wave
    assert relay.drops == {(Op.SLOT_START, 702): 0, (Op.SLOT_COMPLETE, 705): 0}
    # Each slot was flipped once by the switch model, to the target.
    assert sorted(s for kind, s, *_ in relay.transitions if kind == "complete") == slots
    check_moved(source, target, data, slots)


async def test_a_slot_that_keeps_failing_stays_wholly_at_the_source(agents, monkeypatch) -> None:
    from netmigrate.agent.source import transitions

    monkeypatch.setattr(transitions, "TRANSITION_ATTEMPTS", 2)
    monkeypatch.setattr(transitions, "TRANSITION_TIMEOUT", 0.05)
    source, target, relay = agents
    source.source.slot_retry_seconds = 0.3
    slots = list(range(720, 726))
    data = preload(source_redis(source), slots, 4)
    relay.drops = {(Op.SLOT_START, 723): 10**6}  # every START of 723 is lost
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(batch=5, parallel=6, grace=0, poll=0.05)
    with pytest.raises(migration.MigrationError) as info:
        await migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts)
    failed = info.value.result
    assert failed.slots_rolled_back == 1 and failed.slots_done == len(slots) - 1
    # 723 never reached the target: it went back to the source (#12.6), which owns it again;
    # its keys are all at the source, none at the target.
    assert source.table.state(723) == SlotState.OWNED
    assert target.table.state(723) == SlotState.NOT_OWNED
    b = target_redis(target)
    assert not any(b.exists(k) for k in keys_in(723, 4))
    for s in slots:
        if s != 723:
            assert target.table.state(s) == SlotState.OWNED
            assert all(b.get(k) == data[k] for k in keys_in(s, 4))
    relay.drops.clear()
    result = await migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts)
    assert result.state == "FINALIZED"
    check_moved(source, target, data, slots)


async def test_a_failed_copy_stream_sends_the_wave_on_slot_by_slot(agents) -> None:
    """The target's Redis refuses the restore of one slot of the wave (its dirty set is of the
    wrong type): the wave's stream fails, every slot of it goes on alone, the others finish,
    and the broken one once it is repaired."""
    source, target, relay = agents
    slots = [740, 741, 742, 743]
    data = preload(source_redis(source), slots, 30)
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(batch=30, parallel=4, rate=40, grace=0, poll=0.05)
    run = asyncio.create_task(migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts))
    b = target_redis(target)
    await until(lambda: b.exists(marker_key(743)), timeout=10, interval=0.005)
    b.set(dirty_key(743), b"not a set")  # the restore script's SISMEMBER fails on it
    mid = migration.migration_id_for(KEYSPACE, SOURCE, TARGET, slots)
    m = source.source._migrations[mid]
    await until(lambda: m.slots[743].attempts >= 2, timeout=20)
    assert all(m.slots[s].attempts >= 1 for s in slots)  # the whole wave went on alone
    b.delete(dirty_key(743))
    result = await asyncio.wait_for(run, 30)
    assert result.state == "FINALIZED"
    check_moved(source, target, data, slots)


async def test_the_rate_limit_paces_empty_slots(agents) -> None:
    """One token per slot: 120 empty slots at 40 per second take at least (120 - 40) / 40 s
    (the bucket starts full). A lower bound only: a busy machine just adds to it."""
    source, target, relay = agents
    slots = list(range(1000, 1120))
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(parallel=16, rate=40, grace=0, poll=0.05)
    start = time.monotonic()
    result = await migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts)
    assert time.monotonic() - start >= 1.9
    assert result.state == "FINALIZED" and result.slots_done == len(slots)


def source_redis(source: Agent) -> redis.Redis:
    return _client(source)


def target_redis(target: Agent) -> redis.Redis:
    return _client(target)


def _client(agent: Agent) -> redis.Redis:
    cfg = agent.config.redis
    return redis.Redis(host=cfg.host, port=cfg.port)


def check_moved(source: Agent, target: Agent, data: dict[bytes, bytes], slots: list[int]) -> None:
    a, b = source_redis(source), target_redis(target)
    for s in slots:
        assert source.table.state(s) == SlotState.NOT_OWNED
        assert target.table.state(s) == SlotState.OWNED
    for k, v in data.items():
        assert b.get(k) == v, k
        assert not a.exists(k), k


async def test_the_rate_limit_changes_while_the_migration_runs(agents) -> None:
    """2,000 empty slots at 20 per second would take 100 s; once the rate is lifted they all
    move at once. The new rate is persisted, and setting it again changes nothing."""
    source, target, relay = agents
    slots = list(range(2000, 4000))
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(parallel=64, rate=20, grace=0, poll=0.05)
    run = asyncio.create_task(migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts))
    await until(lambda: bool(source.source and source.source.all()))
    assert source.source is not None
    (m,) = source.source.all()
    await until(lambda: sum(r.phase == "done" for r in m.slots.values()) >= 10)
    done_before = sum(r.phase == "done" for r in m.slots.values())
    assert done_before < 200  # still paced

    lifted = await migration.set_rate(src_ep, m.record.migration_id, 0)
    assert lifted.changed
    result = await asyncio.wait_for(run, 30)  # 90+ s at the old rate
    assert result.state == "FINALIZED" and result.slots_done == len(slots)
    again = await migration.set_rate(src_ep, m.record.migration_id, 0)
    assert not again.changed
    store = MigrationStore(source._admin, 0, SOURCE, source.table)
    persisted = (await store.load_migrations())[m.record.migration_id]
    assert persisted.rate_keys_per_second == 0 and persisted.state == "FINALIZED"


async def test_run_with_another_rate_retunes_a_running_migration(agents) -> None:
    """The same request with another rate (a re-run, or an Ansible task with a new value)
    changes the running migration's rate; without a rate it leaves it alone."""
    source, target, relay = agents
    slots = list(range(5000, 6000))
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    slow = asyncio.create_task(
        migration.run(
            src_ep, dst_ep, slots, keyspace=ks, options=MigrationOptions(rate=10, poll=0.05)
        )
    )
    await until(lambda: bool(source.source and source.source.all()))
    assert source.source is not None
    (m,) = source.source.all()
    status_only = await migration.plan(src_ep, dst_ep, slots, keyspace=ks)
    assert status_only.migration_id == m.record.migration_id
    # No rate given: the running migration keeps its own.
    keep = asyncio.create_task(
        migration.run(src_ep, dst_ep, slots, keyspace=ks, options=MigrationOptions(poll=0.05))
    )
    await asyncio.sleep(0.3)
    assert m.record.rate_keys_per_second == 10 and not keep.done()
    fast = await asyncio.wait_for(
        migration.run(
            src_ep, dst_ep, slots, keyspace=ks, options=MigrationOptions(rate=0, poll=0.05)
        ),
        30,
    )
    assert fast.changed and fast.state == "FINALIZED" and fast.slots_done == len(slots)
    assert m.record.rate_keys_per_second == 0
    for task in (slow, keep):
        assert (await asyncio.wait_for(task, 30)).state == "FINALIZED"


async def test_the_hottest_slots_move_first(agents) -> None:
    """Client load on three slots of a range: the first wave starts them, hottest first, and
    then the cold slots in ascending order (waves of ``parallel`` slots, one after another)."""
    from netmigrate.client import AsyncClient

    source, target, relay = agents
    slots = list(range(3000, 3040))
    preload(source_redis(source), slots, 2)
    load = {3031: 30, 3017: 20, 3039: 10}
    async with AsyncClient(relay.address, KEYSPACE, timeout=1.0) as client:
        for slot, n in load.items():
            (key,) = keys_in(slot, 1)
            for _ in range(n):
                assert await client.get(key) is not None
    src_ep, dst_ep = endpoints(source, target)
    ks = KeyspaceRef(KEYSPACE, *relay.address)
    opts = MigrationOptions(parallel=8, grace=0, poll=0.05)
    result = await migration.run(src_ep, dst_ep, slots, keyspace=ks, options=opts)
    assert result.state == "FINALIZED" and result.slots_done == len(slots)
    starts = [s for kind, s, *_ in relay.transitions if kind == "start"]
    cold = [s for s in slots if s not in load]
    assert starts == [3031, 3017, 3039, *cold]
