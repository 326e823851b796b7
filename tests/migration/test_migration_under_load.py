"""The main test: a live migration of many slots under concurrent client load, through the
switch model, checked by the history checker (DESIGN section 6's guarantees)."""

from __future__ import annotations

import asyncio
import random

from migration_helpers import KEYSPACE, keys_in

from netmigrate import migration
from netmigrate.agent.reserved import is_reserved
from netmigrate.bench.history import History, unique_value
from netmigrate.client import AsyncClient, ServerError, Timeout
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.slot import key_slot

SLOTS = list(range(3000, 3024))
OTHER = [3100, 3101]  # stay at the source


async def test_live_migration_under_load_keeps_every_guarantee(pair) -> None:
    p = await pair(relay=True)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    history = History()
    registers: list[bytes] = []
    counters: list[bytes] = []
    by_slot: dict[int, list[bytes]] = {}
    for slot in SLOTS + OTHER:
        by_slot[slot] = keys_in(slot, 12)
        for k in by_slot[slot]:
            value = unique_value(0, len(registers))
            ra.set(k, value)
            history.initial[k] = value
            registers.append(k)
        counters += keys_in(slot, 2, "n")
    for k in counters:
        history.initial_counters[k] = 0
    rng = random.Random(7)
    stop = asyncio.Event()
    failures: list[str] = []
    timeouts = 0

    async def worker(wid: int, client: AsyncClient) -> None:
        nonlocal timeouts
        seq = 0
        while not stop.is_set():
            seq += 1
            roll = rng.random()
            try:
                if roll < 0.2:
                    key = rng.choice(counters)
                    op = history.invoke("incr", key)
                    history.complete(op, result=await client.incrby(key, 1))
                    continue
                if roll < 0.25:  # MGET of two keys of one slot: one read per key
                    slot = rng.choice(SLOTS + OTHER)
                    pair_keys = rng.sample(by_slot[slot], 2)
                    ops = [history.invoke("get", k) for k in pair_keys]
                    values = await client.mget(pair_keys)
                    for op, value in zip(ops, values, strict=True):
                        history.complete(op, value=value)
                    continue
                key = rng.choice(registers)
                if roll < 0.55:
                    op = history.invoke("get", key)
                    history.complete(op, value=await client.get(key))
                elif roll < 0.9:
                    value = unique_value(wid, seq, 40)
                    op = history.invoke("set", key, value)
                    await client.set(key, value)
                    history.complete(op)
                else:
                    op = history.invoke("del", key)
                    await client.delete(key)
                    history.complete(op)
            except Timeout:
                timeouts += 1  # outcome unknown: the checker treats it as such
            except ServerError as e:
                failures.append(str(e))

    async with AsyncClient(p.relay.address, KEYSPACE, timeout=0.25, retries=12) as client:
        workers = [asyncio.create_task(worker(w, client)) for w in range(1, 9)]
        await asyncio.sleep(0.3)  # load before
        result = await migration.run(
            p.source_ep,
            p.target_ep,
            SLOTS,
            keyspace=p.keyspace,
            options=MigrationOptions(batch=4, parallel=4, rate=400, grace=0.2, poll=0.05),
        )
        await asyncio.sleep(0.3)  # load after
        stop.set()
        await asyncio.gather(*workers)
        # Quiescent: read the final state through the switch model.
        for k in registers:
            history.final[k] = await client.get(k)
        for k in counters:
            history.final_counters[k] = int(await client.get(k) or 0)

    assert result.state == "FINALIZED" and result.slots_done == len(SLOTS)
    check = history.check()
    assert check.ok, check.summary()
    assert not failures, failures[:5]
    assert timeouts <= len(history.ops) // 100, f"{timeouts} of {len(history.ops)} timed out"
    assert len(history.ops) > 500  # there really was load during the migration
    # The load crossed the migration: redirected writes and double reads reached the target.
    stats = p.target.stats.snapshot()
    assert stats.requests["SET"] > 0 and stats.requests["GET"] > 0 and stats.requests["MGET"] > 0
    assert [t[0] for t in p.relay.transitions].count("complete") == len(SLOTS)
    # After finalize every key lives exactly once, at its owner.
    for k in registers + counters:
        moved = key_slot(k) in SLOTS
        assert not (ra.exists(k) and rb.exists(k))
        assert not (moved and ra.exists(k)) and not (not moved and rb.exists(k))
    assert not [k for k in rb.scan_iter() if is_reserved(k) and not k.startswith(b"{")]
