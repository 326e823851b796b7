"""Migrations under load with faults: packet loss, a killed agent, a restarted switch, abort,
two migrations at once. Each moves a slice of slots of a keyspace preloaded through the
client, with the load generator running throughout; the history checker must stay clean and
no client operation may fail with a non-retryable error.

The scenarios share one stack and run in file order; each starts from the ownership the
previous one left (tracked in ``OWNERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable

import pytest

from netmigrate.lab.stack import (
    Stack,
    StackConfig,
    configure_switch,
    start_agent,
    start_switch_process,
    stop_switch_process,
)
from netmigrate.lab.supervise import Supervisor, process_running
from netmigrate.migration import (
    MigrationError,
    MigrationOptions,
    abort,
    migration_id_for,
    reconcile,
    resume,
    run,
)
from netmigrate.migration.agents import AgentClient
from netmigrate.protocol.slot import key_slot
from netmigrate.switch.control import ControlClient

from .conftest import agent, assert_clean, keyspace, redis_of, switch

PRELOAD = 20_000
LOAD = ("--preload", str(PRELOAD), "--concurrency", "8")
# Each scenario's migration has its own 240 s timeout; pytest's default 300 s is too tight.
pytestmark = pytest.mark.timeout(600)

OPTIONS = MigrationOptions(parallel=32, batch=256, grace=0.3)


def _keys_by_server(stack: Stack, prefix: str) -> dict[int, set[bytes]]:
    return {
        s.server_id: set(redis_of(stack, s.server_id).scan_iter(match=prefix + "*", count=5000))
        for s in stack.servers
    }


def assert_placement(stack: Stack, prefix: str, moved: Iterable[int], dst: int) -> None:
    """Every key lives in exactly one Redis, and every key of a moved slot at ``dst``."""
    where = _keys_by_server(stack, prefix)
    seen: dict[bytes, int] = {}
    for sid, keys in where.items():
        for k in keys:
            assert k not in seen, f"{k!r} at servers {seen[k]} and {sid}"
            seen[k] = sid
    moved = set(moved)
    misplaced = [(k, sid) for k, sid in seen.items() if key_slot(k) in moved and sid != dst]
    assert not misplaced, f"keys of moved slots not at server {dst}: {misplaced[:5]}"


async def _owned(stack: Stack, n: int) -> set[int]:
    async with AgentClient(agent(stack, n)) as a:
        reply = await a.identify(stack.keyspace_id)
    return {s for r in reply.owned for s in range(r.start, r.end + 1)}


async def _ownership_is_whole(stack: Stack, slots: list[int], src: int, dst: int) -> list[int]:
    """Every slot owned by exactly one side (the agents' word); the slots ``dst`` owns."""
    at_src, at_dst = await _owned(stack, src), await _owned(stack, dst)
    for slot in slots:
        assert (slot in at_src) != (slot in at_dst), f"slot {slot} owned by both or neither"
    return sorted(set(slots) & at_dst)


async def _wait_in_flight(stack: Stack, src: int, mid: str, at_least: int = 1) -> None:
    from netmigrate.migration import status

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = await status(agent(stack, src), mid)
        except MigrationError:  # not started yet: the agent does not know the id
            found = []
        if found and found[0].slots_done >= at_least:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("migration never got going")


async def _sigkill_service(stack: Stack, name: str) -> None:
    """SIGKILL a supervised service of the lab and wait until it is gone (delivery is
    asynchronous)."""
    pid = Supervisor(stack.run_dir).status(name).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while process_running(pid):
        await asyncio.sleep(0.01)


async def _resume_when_reachable(stack: Stack, src, dst, mid: str):
    """Resume; a restarted agent's control port may refuse for a moment (gRPC keeps the
    failed connection in reconnect backoff), which is the one error worth waiting out."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await resume(src, mid, target=dst, keyspace=keyspace(stack),
                                switch=switch(stack), finalize=True, options=OPTIONS)  # fmt: skip
        except MigrationError as exc:
            if exc.code != "UNAVAILABLE" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_migration_with_one_percent_loss(stack: Stack, load_factory) -> None:
    slots = list(range(0, 1024))
    ctl = ControlClient(stack.switch_control_socket)
    lp = load_factory(*LOAD, name="loss")
    lp.wait_ready()
    for s in stack.servers:
        ctl.set_fault(s.switch_port, drop=0.01)
    ctl.set_fault(1, drop=0.01)  # the client's port too
    try:
        result = asyncio.run(
            run(agent(stack, 1), agent(stack, 2), slots, keyspace=keyspace(stack),
                switch=switch(stack), options=OPTIONS, timeout=240)
        )  # fmt: skip
    finally:
        for port in range(1, len(stack.servers) + 2):
            ctl.clear_fault(port)
    doc = lp.stop()
    assert result.state == "FINALIZED", result.message
    assert_clean(doc)
    assert doc["client"]["retries"] > 0  # the loss was real
    assert_placement(stack, doc["key_prefix"], slots, 2)


def test_kill_source_agent_mid_migration_then_resume(
    stack: Stack, stack_config: StackConfig, load_factory
) -> None:
    slots = list(range(1024, 2048))
    src, dst = agent(stack, 1), agent(stack, 3)
    mid = migration_id_for(stack.keyspace_id, 1, 3, slots)
    lp = load_factory(*LOAD, name="kill")
    lp.wait_ready()

    async def scenario():
        task = asyncio.create_task(
            run(src, dst, slots, keyspace=keyspace(stack), switch=switch(stack),
                options=OPTIONS, timeout=240)
        )  # fmt: skip
        await _wait_in_flight(stack, 1, mid, at_least=50)
        # SIGKILL: no clean shutdown, whatever was in flight is simply gone.
        await _sigkill_service(stack, "redis1-agent")
        with pytest.raises(MigrationError):
            await task
        assert await asyncio.to_thread(start_agent, stack_config, stack, "redis1")
        return await _resume_when_reachable(stack, src, dst, mid)

    result = asyncio.run(scenario())
    doc = lp.stop()
    assert result.state in ("DONE", "FINALIZED"), result.message
    assert result.slots_done == len(slots)
    assert_clean(doc)
    assert_placement(stack, doc["key_prefix"], slots, 3)


def test_restart_switch_mid_migration_reconcile_resume(
    stack: Stack, stack_config: StackConfig, load_factory
) -> None:
    slots = list(range(2048, 3072))
    src, dst = agent(stack, 1), agent(stack, 2)
    mid = migration_id_for(stack.keyspace_id, 1, 2, slots)
    lp = load_factory(*LOAD, name="switch")
    lp.wait_ready()
    topo = stack_config.topology()

    async def scenario():
        task = asyncio.create_task(
            run(src, dst, slots, keyspace=keyspace(stack), switch=switch(stack),
                options=OPTIONS, timeout=240)
        )  # fmt: skip
        await _wait_in_flight(stack, 1, mid, at_least=50)
        await asyncio.to_thread(stop_switch_process, stack)
        await asyncio.to_thread(start_switch_process, stack_config, stack)
        await configure_switch(stack, topo)
        agents = [agent(stack, s.server_id) for s in stack.servers]
        await reconcile(switch(stack), keyspace(stack), agents)
        try:
            result = await task
        except MigrationError:
            # Slots whose SLOT_COMPLETE kept bouncing off the empty switch until the slot's
            # retry time ran out failed: resume them (finalize rewrites what the switch lost).
            result = await _resume_when_reachable(stack, src, dst, mid)
        check = await reconcile(switch(stack), keyspace(stack), agents, check=True)
        assert not check.changed, check.diff  # the switch agrees with the agents again
        return result

    result = asyncio.run(scenario())
    doc = lp.stop()
    assert result.state in ("DONE", "FINALIZED"), result.message
    assert_clean(doc)
    assert_placement(stack, doc["key_prefix"], slots, 2)


def test_abort_leaves_every_slot_whole(stack: Stack, load_factory) -> None:
    slots = list(range(3072, 5120))
    src, dst = agent(stack, 1), agent(stack, 2)
    mid = migration_id_for(stack.keyspace_id, 1, 2, slots)
    lp = load_factory(*LOAD, name="abort")
    lp.wait_ready()

    async def scenario():
        task = asyncio.create_task(
            run(src, dst, slots, keyspace=keyspace(stack), switch=switch(stack),
                options=OPTIONS, timeout=240)
        )  # fmt: skip
        await _wait_in_flight(stack, 1, mid, at_least=50)
        aborted = await abort(src, mid)
        with contextlib.suppress(MigrationError):
            await task
        return aborted, await _ownership_is_whole(stack, slots, 1, 2)

    aborted, moved = asyncio.run(scenario())
    doc = lp.stop()
    assert aborted.state == "ABORTED", aborted.message
    assert 0 < len(moved) < len(slots)
    assert_clean(doc)


def test_two_migrations_at_once(stack: Stack, load_factory) -> None:
    a = list(range(6144, 6656))  # redis1 -> redis2
    b = list(range(0, 512))  # redis2 (since the loss scenario) -> redis3
    lp = load_factory(*LOAD, name="two")
    lp.wait_ready()

    async def scenario():
        return await asyncio.gather(
            run(agent(stack, 1), agent(stack, 2), a, keyspace=keyspace(stack),
                switch=switch(stack), options=OPTIONS, timeout=240),
            run(agent(stack, 2), agent(stack, 3), b, keyspace=keyspace(stack),
                switch=switch(stack), options=OPTIONS, timeout=240),
        )  # fmt: skip

    ra, rb = asyncio.run(scenario())
    doc = lp.stop()
    assert ra.state == "FINALIZED", ra.message
    assert rb.state == "FINALIZED", rb.message
    assert_clean(doc)
    assert_placement(stack, doc["key_prefix"], a, 2)
    assert_placement(stack, doc["key_prefix"], b, 3)
