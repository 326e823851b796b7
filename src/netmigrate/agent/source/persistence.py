"""The slots that move out of this agent: their persisted records, their freeze barriers and
their state in the slot table, changed together.

A record changes only after its write to Redis succeeded, so memory and Redis agree after any
failure, and a restart finds every slot in flight in the phase it persisted last.
"""

from __future__ import annotations

import asyncio
from typing import Any

from netmigrate.agent.migration_store import MigrationStore, SlotRecord
from netmigrate.agent.slots import OWNER_STATES, SlotState, SlotTable

#: The slot table's state of a slot moving out, per persisted phase (after a restart).
_STATE_OF_PHASE = {
    "starting": SlotState.MIGRATING_OUT,
    "copying": SlotState.FROZEN,
    "completing": SlotState.FROZEN,
    "done": SlotState.MOVED,
}


class OutgoingSlots:
    def __init__(self, table: SlotTable, store: MigrationStore) -> None:
        self.table = table
        self.store = store
        #: Persisted source records of slots in flight or moved (slot -> record).
        self.records: dict[int, SlotRecord] = {}
        #: slot -> future that is True once every request before the freeze was applied.
        self.barriers: dict[int, asyncio.Future[bool]] = {}

    def restore(self, records: dict[int, SlotRecord]) -> None:
        """Take over the slots in flight that a restart found persisted."""
        loop = asyncio.get_running_loop()
        for slot, rec in records.items():
            if rec.role != "out":
                continue
            if rec.phase == "finalized":
                continue
            self.records[slot] = rec
            state = _STATE_OF_PHASE[rec.phase]
            self.table.set_state([slot], state)
            if state == SlotState.FROZEN:
                # Nothing was in flight at startup: the freeze holds already.
                barrier = loop.create_future()
                barrier.set_result(True)
                self.barriers[slot] = barrier

    def sorted_records(self) -> list[SlotRecord]:
        return [self.records[s] for s in sorted(self.records)]

    async def frozen(self, slot: int) -> bool:
        """True once every request before the slot's freeze was applied."""
        barrier = self.barriers.get(slot)
        return barrier is not None and await barrier

    async def save(self, rec: SlotRecord, state: SlotState | None = None) -> SlotRecord:
        await self.save_many([rec], state)
        return rec

    async def save_many(self, recs: list[SlotRecord], state: SlotState | None = None) -> None:
        """Persist ``recs`` (one write); only once that succeeded they become the slots'
        records (and the slots enter ``state``), so a failed write leaves memory and Redis
        agreeing."""
        if not recs:
            return

        def apply() -> None:
            for rec in recs:
                self.records[rec.slot] = rec
            if state is not None:
                self.table.set_state([rec.slot for rec in recs], state)

        owned = None
        if state is not None:
            owned = dict.fromkeys((rec.slot for rec in recs), state in OWNER_STATES)
        await self.store.persist(slots={rec.slot: rec for rec in recs}, owned=owned, then=apply)

    async def moved(self, recs: list[SlotRecord]) -> None:
        """Persist the slots as done: the target owns them, they are MOVED here (double reads
        only) until finalize, and their freeze is over."""
        await self.save_many(recs, SlotState.MOVED)
        for rec in recs:
            self.barriers.pop(rec.slot, None)

    async def given_back(self, slots: list[int]) -> None:
        """Persist the slots as owned here again, their records dropped (a rollback): only
        once that succeeded are they OWNED in memory and their freeze over."""

        def back() -> None:
            for slot in slots:
                self.records.pop(slot, None)
                self.barriers.pop(slot, None)
            self.table.set_state(slots, SlotState.OWNED)

        await self.store.persist(
            slots=dict.fromkeys(slots), owned=dict.fromkeys(slots, True), then=back
        )

    async def finalized(self, slots: list[int], then: Any) -> None:
        """Persist the slots as finalized; then they are NOT_OWNED here and forgotten, and
        ``then()`` runs (in the same step)."""
        records = {slot: self.records[slot].evolve(phase="finalized") for slot in slots}

        def gone() -> None:
            self.table.set_state(slots, SlotState.NOT_OWNED)
            for slot in slots:
                self.records.pop(slot, None)
            then()

        await self.store.persist(slots=records, then=gone)  # type: ignore[arg-type]
