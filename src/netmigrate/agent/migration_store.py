"""Persist migration progress in the agent's own Redis, before acting on it.

Next to the ownership bitmap of :mod:`~netmigrate.agent.slot_store` (hash
:data:`~netmigrate.agent.reserved.AGENT_STATE_KEY`), an agent keeps

- :data:`~netmigrate.agent.reserved.SLOT_RECORDS_KEY`: slot -> :class:`SlotRecord` (JSON), the
  slot's migration in either role and its phase;
- :data:`~netmigrate.agent.reserved.MIGRATIONS_KEY`: migration id -> :class:`MigrationRecord`
  (JSON), the migrations this agent is the source of.

All three live in the reserved slot, so every change is one MULTI/EXEC: the ownership bit and
the slot's record can never disagree after a crash. Writes are serialised by a lock, and the
bitmap is computed inside it from the in-memory table plus the change being persisted, so two
slots completing at once cannot overwrite each other's bit with a stale bitmap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from netmigrate.agent.reserved import AGENT_STATE_KEY, MIGRATIONS_KEY, SLOT_RECORDS_KEY
from netmigrate.agent.slots import SlotTable

#: Source phases, in order; "done": the target owns the slot, keys not finalized yet;
#: "finalized": the moved keys were deleted here (kept as a record of the result).
OUT_PHASES = ("starting", "copying", "completing", "done", "finalized")
#: Target phases: "migrating" while the slot moves in, "cleanup" once owned while the per-slot
#: bookkeeping keys are being deleted.
IN_PHASES = ("migrating", "cleanup")


@dataclass
class SlotRecord:
    slot: int
    role: str  # "out" (this agent is the source) or "in" (the target)
    peer: int
    phase: str
    migration_id: str = ""
    started: float = 0.0
    frozen: float = 0.0
    finished: float = 0.0
    keys_copied: int = 0
    keys_total: int = 0
    attempts: int = 0

    def __post_init__(self) -> None:
        phases = OUT_PHASES if self.role == "out" else IN_PHASES if self.role == "in" else ()
        if self.phase not in phases:
            raise ValueError(f"slot {self.slot}: phase {self.phase!r} for role {self.role!r}")

    def to_json(self) -> bytes:
        # Written several times per slot: a plain dict of the fields, not dataclasses.asdict.
        data = {name: getattr(self, name) for name in _SLOT_FIELDS}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SlotRecord:
        return cls(**json.loads(raw))


_SLOT_FIELDS = tuple(f.name for f in fields(SlotRecord))


@dataclass
class MigrationRecord:
    migration_id: str
    target_id: int
    target_control: str
    target_data: str
    service: str
    #: Inclusive ranges of the slots asked for.
    slots: list[tuple[int, int]]
    batch_keys: int
    rate_keys_per_second: int
    parallel_slots: int
    #: RUNNING, ABORTING, ABORTED, FAILED, DONE, FINALIZED
    state: str = "RUNNING"
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    #: Slots the target owned already when the migration started (not moved by it).
    skipped: list[tuple[int, int]] = field(default_factory=list)
    #: How the target reaches this (source) agent's control service, for pulls.
    source_control: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> MigrationRecord:
        data = json.loads(raw)
        data["slots"] = [tuple(r) for r in data["slots"]]
        data["skipped"] = [tuple(r) for r in data.get("skipped", [])]
        return cls(**data)

    def slot_set(self) -> list[int]:
        return [s for lo, hi in self.slots for s in range(lo, hi + 1)]

    def same_request(self, other: MigrationRecord) -> bool:
        """True when ``other`` asks for the same migration (parameters that define it)."""
        return (
            self.target_id,
            self.target_control,
            self.slots,
        ) == (other.target_id, other.target_control, other.slots)


class MigrationStore:
    def __init__(self, client: Any, keyspace: int, server_id: int, table: SlotTable) -> None:
        self._client = client
        self._keyspace = keyspace
        self._server_id = server_id
        self._table = table
        self._lock = asyncio.Lock()

    async def load_slots(self) -> dict[int, SlotRecord]:
        raw: dict[bytes, bytes] = await self._client.hgetall(SLOT_RECORDS_KEY)
        return {int(k): SlotRecord.from_json(v) for k, v in raw.items()}

    async def load_migrations(self) -> dict[str, MigrationRecord]:
        raw: dict[bytes, bytes] = await self._client.hgetall(MIGRATIONS_KEY)
        return {k.decode(): MigrationRecord.from_json(v) for k, v in raw.items()}

    async def persist(
        self,
        *,
        slots: dict[int, SlotRecord | None] | None = None,
        owned: dict[int, bool] | None = None,
        migration: MigrationRecord | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """One atomic write: slot records (None deletes), ownership bits, a migration record.

        ``owned`` overrides the in-memory table for the bits of those slots: the caller
        persists the state it is *about* to enter, and enters it in ``then``, which runs under
        the same lock once the write succeeded (so the next bitmap written includes it).
        """
        async with self._lock:
            pipe = self._client.pipeline(transaction=True)
            if owned:
                pipe.hset(AGENT_STATE_KEY, b"owned", self._table.owned_bitmap(owned))
            for slot, record in (slots or {}).items():
                if record is None:
                    pipe.hdel(SLOT_RECORDS_KEY, str(slot))
                else:
                    pipe.hset(SLOT_RECORDS_KEY, str(slot), record.to_json())
            if migration is not None:
                pipe.hset(MIGRATIONS_KEY, migration.migration_id, migration.to_json())
            await pipe.execute()
            if then is not None:
                then()
