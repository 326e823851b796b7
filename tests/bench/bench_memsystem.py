"""An in-memory System for unit tests of the runner, report, table and plots.

It is a test double of the *systems*, not of the code under test: the runner, recorder,
checker, report and plots run for real against it. ``lose_writes=True`` makes its migration
drop writes that land on the source after a slot's keys were copied -- the classic
stop-and-copy bug -- so tests can prove the checker notices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from netmigrate.bench.kv import ClientEvents
from netmigrate.bench.system import MigrationObserver, MigrationResult, SetupPlan, System
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot


class _Client:
    def __init__(self, sys_: MemorySystem, events: ClientEvents) -> None:
        self._sys = sys_
        self._events = events

    def _store(self, key: bytes) -> dict[bytes, bytes]:
        slot = key_slot(key)
        owner = self._sys.owner[slot]
        if self._sys.redirect_slots.get(slot):
            self._events.event("MOVED")
        return self._sys.stores[owner]

    async def get(self, key: bytes) -> bytes | None:
        await asyncio.sleep(0)
        return self._store(key).get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        await asyncio.sleep(0)
        if self._sys.fail_writes:
            raise ConnectionError("injected")
        self._store(key)[key] = value

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        for k, v in items:
            self._store(k)[k] = v

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self._store(k).get(k) for k in keys]

    async def aclose(self) -> None:
        self._sys.closed_clients += 1


class MemorySystem(System):
    name = "memory"
    description = "in-memory test system"

    def __init__(
        self, *, lose_writes: bool = False, step_s: float = 0.002, steps: int = 20
    ) -> None:
        self.lose_writes = lose_writes
        self.step_s = step_s
        self.steps = steps
        self.stores: list[dict[bytes, bytes]] = [{}, {}]
        self.owner = [0] * SLOT_COUNT
        self.redirect_slots: dict[int, bool] = {}
        self.fail_writes = False
        self.torn_down = False
        self.closed_clients = 0
        self.setup_plan: SetupPlan | None = None

    @property
    def source(self) -> str:
        return "source"

    @property
    def target(self) -> str:
        return "target"

    async def setup(self, plan: SetupPlan) -> None:
        self.setup_plan = plan

    async def client(self, events: ClientEvents) -> _Client:
        return _Client(self, events)

    async def migrate(self, slots: Sequence[int], observer: MigrationObserver) -> MigrationResult:
        observer.started()
        moving = set(slots)
        src, dst = self.stores
        keys = [k for k in list(src) if key_slot(k) in moving]
        per_step = max(1, len(keys) // self.steps)
        for i in range(0, len(keys), per_step):
            for k in keys[i : i + per_step]:
                dst[k] = src[k]
            observer.progress(min(i + per_step, len(keys)), len(keys), "keys")
            await asyncio.sleep(self.step_s)
        if not self.lose_writes:
            # Correct variant: re-copy what changed meanwhile (as if writes were held).
            for k in keys:
                dst[k] = src[k]
        for s in slots:
            self.owner[s] = 1
            self.redirect_slots[s] = True
        observer.finished()
        return MigrationResult(len(slots), len(keys), {"memory": True})

    async def slot_owners(self) -> dict[int, str]:
        return {s: ("source", "target")[o] for s, o in enumerate(self.owner)}

    async def keys_per_node(self) -> dict[str, int]:
        return {"source": len(self.stores[0]), "target": len(self.stores[1])}

    async def teardown(self) -> None:
        self.torn_down = True

    def info(self) -> dict[str, Any]:
        return {"servers": 2}
