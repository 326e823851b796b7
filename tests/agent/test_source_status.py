"""A source's migration status counts its slots per phase as the phases change (kept by the
slots' runs, not recounted per poll) and lists only the slots in flight or failed."""

from __future__ import annotations

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.migration_store import MigrationRecord, SlotRecord
from netmigrate.agent.source.model import Migration, slot_runs
from netmigrate.agent.source.status import migration_status


def test_status_counts_follow_phase_changes() -> None:
    mrec = MigrationRecord("m", 2, "h:1", "", "s:2", [(0, 9)], 10, 0, 4, skipped=[(9, 9)])
    done = SlotRecord(3, "out", 2, "done", "m", 1.0)
    m = Migration(mrec, slot_runs(mrec, {3: done}))
    status = migration_status(m, 1)
    assert (status.slots_pending, status.slots_done, status.slots_skipped) == (8, 1, 1)
    assert status.slots_in_flight == 0 and list(status.slots) == []

    m.slots[0].phase = "starting"
    m.slots[1].phase = "copying"
    m.slots[2].phase = "failed"
    m.slots[1].phase = "completing"
    status = migration_status(m, 1)
    assert (status.slots_pending, status.slots_in_flight, status.slots_failed) == (5, 2, 1)
    shown = {s.slot: s.phase for s in status.slots}
    assert shown == {0: control_pb2.STARTING, 1: control_pb2.COMPLETING, 2: control_pb2.FAILED}
    assert [s.slot for s in status.slots] == [0, 1, 2]

    for s in (0, 1):
        m.slots[s].phase = "done"
    status = migration_status(m, 1, include_slots=True)
    assert (status.slots_done, status.slots_in_flight, len(status.slots)) == (3, 0, 10)


def test_a_full_status_in_steps_equals_the_full_status_and_lets_the_loop_run() -> None:
    import asyncio

    from netmigrate.agent.source.status import migration_status_in_steps

    mrec = MigrationRecord("m", 2, "h:1", "", "s:2", [(0, 2999)], 10, 0, 4)
    m = Migration(mrec, slot_runs(mrec, {}))
    for s in range(0, 3000, 3):
        m.slots[s].phase, m.slots[s].keys_copied, m.slots[s].error = "done", s, f"e{s}"
    turns: list[int] = []

    async def main() -> control_pb2.MigrationStatus:
        building = asyncio.create_task(
            migration_status_in_steps(m, 1, include_slots=True, step=500)
        )
        while not building.done():
            turns.append(1)
            await asyncio.sleep(0)
        return building.result()

    stepped = asyncio.run(main())
    assert stepped == migration_status(m, 1, include_slots=True)
    assert len(stepped.slots) == 3000 and stepped.slots_done == 1000
    assert len(turns) >= 6  # six steps of 500 slots, the loop ran between them
    # Without include_slots it is the polled status, built at once.
    assert asyncio.run(migration_status_in_steps(m, 1)) == migration_status(m, 1)


def test_a_status_in_steps_is_of_one_moment() -> None:
    import asyncio

    from netmigrate.agent.source.status import migration_status_in_steps

    mrec = MigrationRecord("m", 2, "h:1", "", "s:2", [(0, 999)], 10, 0, 4)
    m = Migration(mrec, slot_runs(mrec, {}))

    async def main() -> control_pb2.MigrationStatus:
        building = asyncio.create_task(
            migration_status_in_steps(m, 1, include_slots=True, step=100)
        )
        await asyncio.sleep(0)
        m.slots[999].phase = "done"  # changes after the snapshot are not in it
        return await building

    status = asyncio.run(main())
    assert status.slots_done == 0 and status.slots[999].phase == control_pb2.PENDING
