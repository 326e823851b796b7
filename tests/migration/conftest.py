"""Fixtures of the migration tests: two real Redis servers, real agents, the switch model.

- ``redis_pair``: two cluster-mode redis-servers (shared by all migration tests; ``redises``
  flushes them for each test, agent state included);
- ``pair``: factory of a source agent (server 1, owns every slot) and a target agent (server
  2, owns none), in-process, each with its control service; the source sends SLOT_START /
  SLOT_COMPLETE to the target directly (what the switch delivers) or to a :class:`Relay`;
- ``agent_proc``: ``netmigrate agent`` subprocesses (for SIGKILL), always killed at the end.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from migration_helpers import KEYSPACE, AgentProc, free_port, pair_factory


@pytest.fixture(scope="session")
def redis_pair(redis_server_session) -> tuple[Any, Any]:
    a = redis_server_session(cluster=True)
    b = redis_server_session(cluster=True)
    a.assign_all_slots()
    b.assign_all_slots()
    return a, b


@pytest.fixture
def redises(redis_pair) -> tuple[Any, Any]:
    for r in redis_pair:
        r.client().flushall()
    return redis_pair


@pytest_asyncio.fixture
async def pair(redises) -> AsyncIterator[Any]:
    """``await pair(relay=False, **source_config)`` -> :class:`Pair`, both agents started."""
    async with pair_factory(redises) as make:
        yield make


@pytest.fixture
def agent_proc(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``agent_proc(redis, server_id, slots, *extra_args)`` -> a started AgentProc
    (UDP and control on fixed ports so that a restart keeps its addresses)."""
    procs: list[AgentProc] = []

    def make(redis: Any, server_id: int, slots: str, *extra: str) -> AgentProc:
        udp, control = free_port(socket.SOCK_DGRAM), free_port()
        args = [
            "--redis",
            redis.url,
            "--listen",
            f"127.0.0.1:{udp}",
            "--control",
            f"127.0.0.1:{control}",
            "--keyspace",
            str(KEYSPACE),
            "--server-id",
            str(server_id),
            "--slots",
            slots,
            "--no-uvloop",
            *extra,
        ]
        p = AgentProc(args, tmp_path / f"agent-{server_id}-{len(procs)}.log")
        procs.append(p)
        return p.start()

    try:
        yield make
    finally:
        for p in procs:
            p.kill()
