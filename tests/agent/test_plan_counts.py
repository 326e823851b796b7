"""A migration's plan counts its slots' keys on the agent's raw Redis connection, not through
redis-py (issue #14: redis-py's pipeline of 8,192 counts held the source's one event loop for
~0.5 s at its CPU quota, a gap in every client's operations when a migration started)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from netmigrate.agent.source.model import MigrationRequestError, StepFailed
from netmigrate.agent.source.prepare import Planner


class NoAdmin:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the count went through redis-py ({name})")


class RawKeys:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.round_trips: list[list[bytes]] = []
        self.fail = fail

    async def calls(self, commands: list[bytes]) -> list[Any]:
        if self.fail is not None:
            raise self.fail
        self.round_trips.append(commands)
        # COUNTKEYSINSLOT of slot s: s % 7 keys.
        return [int(c.split(b"\r\n")[-2]) % 7 for c in commands]


def test_the_plan_counts_keys_on_the_raw_connection_in_round_trips_of_1024() -> None:
    keys = RawKeys()
    planner = Planner(SimpleNamespace(admin=NoAdmin(), keys=keys))  # type: ignore[arg-type]
    slots = list(range(3000))
    assert asyncio.run(planner.count_keys(slots)) == sum(s % 7 for s in slots)
    assert [len(r) for r in keys.round_trips] == [1024, 1024, 952]
    assert keys.round_trips[0][5] == b"*3\r\n$7\r\nCLUSTER\r\n$15\r\nCOUNTKEYSINSLOT\r\n$1\r\n5\r\n"


@pytest.mark.parametrize("fail", [StepFailed("Redis: LOADING"), ConnectionResetError()])
def test_a_count_that_fails_refuses_the_migration_as_unavailable(fail: BaseException) -> None:
    planner = Planner(SimpleNamespace(admin=NoAdmin(), keys=RawKeys(fail)))  # type: ignore[arg-type]
    with pytest.raises(MigrationRequestError) as e:
        asyncio.run(planner.count_keys([1, 2]))
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
