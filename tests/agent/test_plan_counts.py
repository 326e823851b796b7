"""A migration's plan counts its slots' keys on the agent's raw Redis connection, not through
redis-py (issue #14: redis-py's pipeline of 8,192 counts held the source's one event loop for
~0.5 s at its CPU quota), and a count that fails refuses the migration as UNAVAILABLE."""

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


class FailingKeys:
    def __init__(self, fail: BaseException) -> None:
        self.fail = fail

    async def count_keys(self, slots: list[int]) -> int:
        raise self.fail


@pytest.mark.parametrize("fail", [StepFailed("Redis: LOADING"), ConnectionResetError()])
def test_a_count_that_fails_refuses_the_migration_as_unavailable(fail: BaseException) -> None:
    planner = Planner(SimpleNamespace(admin=NoAdmin(), keys=FailingKeys(fail)))  # type: ignore[arg-type]
    with pytest.raises(MigrationRequestError) as e:
        asyncio.run(planner.count_keys([1, 2]))
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
