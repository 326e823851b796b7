"""Faults during a migration: the source agent killed mid-copy (resume from its persisted
progress), the target agent killed mid-copy (its dirty marks survive, the copy is redone), and
an abort (every slot ends wholly at one side). Killed agents are real processes (SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from migration_helpers import SOURCE, TARGET, agent_config, keys_in, until

from netmigrate import migration
from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.app import Agent
from netmigrate.agent.slots import SlotState
from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions
from netmigrate.migration.agents import AgentClient
from netmigrate.protocol.codec import Delete, Set, encode_request
from netmigrate.protocol.constants import Flag, Op
from netmigrate.protocol.slot import key_slot

KEYSPACE = 50000


def preload(client, slots: list[int], n: int) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    data = {}
    for slot in slots:
        for i, k in enumerate(keys_in(slot, n)):
            data[k] = b"%d-%d" % (slot, i)
    pipe = client.pipeline(transaction=False)
    for k, v in data.items():
        pipe.set(k, v)
    pipe.execute()
    return data


async def phases(ep: AgentEndpoint, mid: str) -> dict[int, str]:
    async with AgentClient(ep) as agent:
        (status,) = await agent.status(mid, include_slots=True)
    return {s.slot: control_pb2.SlotPhase.Name(s.phase) for s in status.slots}


async def test_source_killed_mid_copy_resumes_from_persisted_progress(redises, agent_proc) -> None:
    ra, rb = redises
    slots = [200, 201, 202, 203, 204, 205]
    data = preload(ra.client(), slots, 150)
    target = Agent(agent_config(rb, TARGET, frozenset()))
    await target.start()
    try:
        source = agent_proc(ra, SOURCE, "all")
        source_ep = AgentEndpoint(SOURCE, source.endpoint_control)
        target_ep = AgentEndpoint(TARGET, f"127.0.0.1:{target.control_port}")
        keyspace = KeyspaceRef(KEYSPACE, *target.address)
        # A wave prepays at most one second of the rate and copies the rest throttled: at
        # 100 keys/s a wave of two 150-key slots stays COPYING for ~2 s, long enough to see.
        opts = MigrationOptions(
            batch=10, parallel=2, rate=100, grace=0, poll=0.05, source_unreachable=60
        )
        run = asyncio.create_task(
            migration.run(source_ep, target_ep, slots, keyspace=keyspace, options=opts)
        )
        mid = migration.migration_id_for(KEYSPACE, SOURCE, TARGET, slots)
        seen: dict[int, str] = {}

        async def poll() -> None:
            seen.update(await phases(source_ep, mid))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not ({"DONE"} <= set(seen.values()) and "COPYING" in seen.values()):
            assert loop.time() < deadline, seen
            await asyncio.sleep(0.05)
            with contextlib.suppress(migration.MigrationError):  # restarting
                await poll()
        source.kill()  # SIGKILL: mid-copy, one slot done at least
        in_flight = [s for s, ph in seen.items() if ph == "COPYING"]
        await asyncio.sleep(0.3)
        source.start()  # same Redis, same ports: continues the RUNNING migration by itself
        result = await asyncio.wait_for(run, 60)
        assert result.state == "FINALIZED" and result.slots_done == len(slots)
        assert any(s.attempts == 0 for s in result.slots)
        assert in_flight
    finally:
        await target.stop()
    a, b = ra.client(), rb.client()
    for k, v in data.items():
        assert b.get(k) == v, k
        assert not a.exists(k)
    assert all(target.table.state(s) == SlotState.OWNED for s in slots)


async def test_target_killed_mid_copy_keeps_its_writes_and_redoes_the_copy(
    redises, agent_proc, udp_peer
) -> None:
    ra, rb = redises
    slot = 300
    data = preload(ra.client(), [slot], 240)
    order = [k for k in ra.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 500)]
    written, deleted = order[-1], order[-2]  # copied last
    target = agent_proc(rb, TARGET, "none")
    source = Agent(agent_config(ra, SOURCE, frozenset(range(16384))))
    await source.start()
    peer = await udp_peer()
    try:
        source_ep = AgentEndpoint(SOURCE, f"127.0.0.1:{source.control_port}")
        target_ep = AgentEndpoint(TARGET, target.endpoint_control)
        keyspace = KeyspaceRef(KEYSPACE, *target.udp)
        opts = MigrationOptions(batch=5, rate=150, grace=0, poll=0.05)
        run = asyncio.create_task(
            migration.run(source_ep, target_ep, [slot], keyspace=keyspace, options=opts)
        )
        mid = migration.migration_id_for(KEYSPACE, SOURCE, TARGET, [slot])
        await until(lambda: source.source is not None and mid in source.source._migrations)
        m = source.source._migrations[mid]
        await until(lambda: m.slots[slot].keys_copied >= 40)
        # Writes at the target, as the switch redirects them (TO_TARGET), before the copy
        # reached these keys.
        for op, body in (
            (Op.SET, Set(written, b"written-at-target")),
            (Op.DEL, Delete(written + b"x")),
        ):
            del op, body
        peer.send(
            encode_request(Op.SET, 1, KEYSPACE, slot, Set(written, b"new"), Flag.TO_TARGET),
            target.udp,
        )
        peer.send(
            encode_request(Op.DEL, 2, KEYSPACE, slot, Delete(deleted), Flag.TO_TARGET), target.udp
        )
        replies = [await peer.recv(3.0) for _ in range(2)]
        assert len(replies) == 2
        assert rb.client().sismember(
            b"__netmigrate__:{"
            + __import__("netmigrate.agent.reserved").agent.reserved.slot_tag(slot)
            + b"}:dirty",
            written,
        )
        target.kill()  # SIGKILL mid-copy
        await asyncio.sleep(0.5)
        target.start()
        result = await asyncio.wait_for(run, 60)
        assert result.state == "FINALIZED"
        assert result.slots[0].attempts >= 1  # the copy failed and was redone
    finally:
        await source.stop()
    b = rb.client()
    assert b.get(written) == b"new"
    assert not b.exists(deleted)
    for k, v in data.items():
        if k not in (written, deleted):
            assert b.get(k) == v
    assert not [k for k in ra.client().scan_iter() if key_slot(k) == slot]


async def test_abort_leaves_every_slot_wholly_on_one_side_and_resume_finishes(pair) -> None:
    p = await pair()
    slots = list(range(400, 412))
    data = preload(p.redis_a.client(), slots, 20)
    opts = MigrationOptions(batch=5, parallel=2, rate=150, grace=0, poll=0.05)
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
    assert aborted.state == "ABORTED"
    assert (await run).state == "ABORTED"
    assert aborted.slots_done + aborted.slots_pending == len(slots)
    assert 2 <= aborted.slots_done < len(slots)
    a, b = p.redis_a.client(), p.redis_b.client()
    for slot in slots:
        at_a, at_b = p.source.table.state(slot), p.target.table.state(slot)
        keys = keys_in(slot, 20)
        if at_b == SlotState.OWNED:
            assert at_a == SlotState.MOVED
            assert all(b.get(k) == data[k] for k in keys)
        else:
            assert (at_a, at_b) == (SlotState.OWNED, SlotState.NOT_OWNED)
            assert not any(b.exists(k) for k in keys)
            assert all(a.get(k) == data[k] for k in keys)
    resumed = await migration.resume(
        p.source_ep, mid, target=p.target_ep, keyspace=p.keyspace, finalize=True
    )
    assert resumed.state == "DONE" and resumed.slots_done == len(slots)
    assert resumed.finalize is not None and resumed.finalize.keys_deleted == len(data)
    assert all(p.target.table.state(s) == SlotState.OWNED for s in slots)


async def test_lost_transitions_fail_the_slot_and_resume_finishes_it(pair, monkeypatch) -> None:
    from netmigrate.agent.source import transitions

    monkeypatch.setattr(transitions, "TRANSITION_ATTEMPTS", 2)
    monkeypatch.setattr(transitions, "TRANSITION_TIMEOUT", 0.05)
    p = await pair(relay=True)
    p.source.source.slot_retry_seconds = 0.3
    data = preload(p.redis_a.client(), [600], 10)
    p.relay.drop_ops.add(Op.SLOT_START)  # the switch loses every SLOT_START
    with pytest.raises(migration.MigrationError) as info:
        await migration.run(p.source_ep, p.target_ep, [600], keyspace=p.keyspace)
    failed = info.value.result
    assert info.value.code == "FAILED" and failed.slots_rolled_back == 1
    assert "no acknowledgement of SLOT_START" in failed.slots[0].error
    # The slot is in flight at the source (persisted), never reached the target.
    assert p.source.table.state(600) == SlotState.OWNED  # given back (#12.6)
    assert p.target.table.state(600) == SlotState.NOT_OWNED
    p.relay.drop_ops.clear()
    result = await migration.run(p.source_ep, p.target_ep, [600], keyspace=p.keyspace)
    assert result.state == "FINALIZED" and result.changed
    assert all(p.redis_b.client().get(k) == v for k, v in data.items())
