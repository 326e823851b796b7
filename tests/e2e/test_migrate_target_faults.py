"""Migrations under load with faults at the **target** (issue #12, "Must show"): its agent
killed mid-migration and resumed, its Redis restarted (without persistence) mid-migration.
The history checker must stay clean, and no slot may ever be owned by two agents.

The scenarios share one stack and run in file order; each moves slots redis1 -> redis2 or
redis1 -> redis3 that no earlier scenario touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from netmigrate.lab.stack import Stack, StackConfig, restart_redis, start_agent
from netmigrate.lab.supervise import Supervisor
from netmigrate.migration import MigrationError, migration_id_for, reconcile, run, status
from netmigrate.migration.agents import AgentClient

from .conftest import agent, assert_clean, keyspace, switch
from .test_migrate_faults import (
    LOAD,
    OPTIONS,
    _ownership_is_whole,
    _resume_when_reachable,
    _sigkill_service,
    _wait_in_flight,
    assert_placement,
)

pytestmark = pytest.mark.timeout(600)


def test_kill_target_agent_mid_migration_then_resume(
    stack: Stack, stack_config: StackConfig, load_factory
) -> None:
    slots = list(range(0, 1024))
    src, dst = agent(stack, 1), agent(stack, 2)
    mid = migration_id_for(stack.keyspace_id, 1, 2, slots)
    lp = load_factory(*LOAD, name="kill-target")
    lp.wait_ready()

    async def scenario():
        task = asyncio.create_task(
            run(src, dst, slots, keyspace=keyspace(stack), switch=switch(stack),
                options=OPTIONS, timeout=240)
        )  # fmt: skip
        await _wait_in_flight(stack, 1, mid, at_least=50)
        # SIGKILL: the target's slots migrating in, its held requests and its copy
        # acknowledgements in flight are simply gone; what it persisted is not.
        await _sigkill_service(stack, "redis2-agent")
        await asyncio.sleep(1.0)  # the source's steps fail against the dead target meanwhile
        assert await asyncio.to_thread(start_agent, stack_config, stack, "redis2")
        try:
            # The source retries a failing slot for 30 s: the run may finish by itself.
            result = await task
        except MigrationError:
            result = await _resume_when_reachable(stack, src, dst, mid)
        if result.state != "FINALIZED":  # finished, not yet finalized: resume finalizes
            result = await _resume_when_reachable(stack, src, dst, mid)
        return result, await _ownership_is_whole(stack, slots, 1, 2)

    result, moved = asyncio.run(scenario())
    doc = lp.stop()
    assert result.state == "FINALIZED", result.message
    assert result.slots_done == len(slots)
    assert moved == slots
    assert_clean(doc)
    assert_placement(stack, doc["key_prefix"], slots, 2)


def test_restart_target_redis_mid_migration_fails_safely(
    stack: Stack, stack_config: StackConfig, load_factory
) -> None:
    """The target's Redis restarts (the lab runs it without persistence) while slots migrate
    in. The load only reads after its preload, so the target holds no acknowledged write:
    the migration must fail at once with an explicit error naming the loss, give every slot
    in flight back to the source, point the switch back, and keep every read fresh."""
    slots = list(range(2048, 3072))
    src, dst = agent(stack, 1), agent(stack, 3)
    mid = migration_id_for(stack.keyspace_id, 1, 3, slots)
    lp = load_factory(*LOAD, "--mix", "get=90,mget=10", name="restart-target-redis")
    lp.wait_ready()
    # 10 keys/s: the first wave (32 slots, ~40 keys) stays migrating in for seconds, and no
    # slot completes (a completed slot's only copy would be the one the restart wipes).
    slow = dataclasses.replace(OPTIONS, rate=10)

    async def scenario():
        task = asyncio.create_task(
            run(src, dst, slots, keyspace=keyspace(stack), switch=switch(stack),
                options=slow, timeout=240)
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            async with AgentClient(dst) as a:
                reply = await a.identify(stack.keyspace_id)
            if any(m.role == "in" for m in reply.migrations):
                break
            assert time.monotonic() < deadline, "nothing migrates in"
            await asyncio.sleep(0.05)
        (before,) = await status(src, mid)
        await asyncio.to_thread(restart_redis, stack, "redis3")
        with pytest.raises(MigrationError) as err:
            await task
        return before, err.value, await _ownership_is_whole(stack, slots, 1, 3)

    try:
        before, err, moved = asyncio.run(scenario())
    except BaseException:
        sup = Supervisor(stack.run_dir)
        for name in ("redis1-agent", "redis3-agent"):  # what the agents saw, for the report
            print(f"--- {name}\n{sup.log_tail(name, 80)}")
        raise
    doc = lp.stop()
    message = str(err)
    print("MEASURED", json.dumps({"message": message[:400], "ops": doc["ops"],
                                  "errors_total": doc["errors_total"]}))  # fmt: skip
    assert before.slots_done == 0
    assert "server 3: Redis lost its data (run_id " in message, message
    assert err.result.slots_rolled_back > 0, message
    assert err.result.slots_done == 0
    assert moved == []  # every slot is the source's again, and only the source's
    check = asyncio.run(
        reconcile(switch(stack), keyspace(stack), [agent(stack, s.server_id) for s in
                  stack.servers], check=True)
    )  # fmt: skip
    assert not check.changed, check.diff  # the switch sends the slots to the source again
    assert_clean(doc)
