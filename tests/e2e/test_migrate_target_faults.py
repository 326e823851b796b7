"""Migrations under load with faults at the **target** (issue #12, "Must show"): its agent
killed mid-migration and resumed, its Redis restarted (without persistence) mid-migration.
The history checker must stay clean, and no slot may ever be owned by two agents.

The scenarios share one stack and run in file order; each moves slots redis1 -> redis2 or
redis1 -> redis3 that no earlier scenario touched.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from netmigrate.lab.stack import Stack, StackConfig, start_agent
from netmigrate.lab.supervise import Supervisor, process_running
from netmigrate.migration import MigrationError, migration_id_for, run

from .conftest import agent, assert_clean, keyspace, switch
from .test_migrate_faults import (
    LOAD,
    OPTIONS,
    _ownership_is_whole,
    _resume_when_reachable,
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
        pid = Supervisor(stack.run_dir).status("redis2-agent").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while process_running(pid):
            await asyncio.sleep(0.01)
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
