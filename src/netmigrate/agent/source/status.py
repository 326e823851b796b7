"""A migration's status as the control API reports it."""

from __future__ import annotations

import asyncio

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.source.model import Migration, SlotRun

PHASE_NAMES = {
    "pending": control_pb2.PENDING,
    "starting": control_pb2.STARTING,
    "copying": control_pb2.COPYING,
    "completing": control_pb2.COMPLETING,
    "done": control_pb2.DONE,
    "skipped": control_pb2.SKIPPED,
    "failed": control_pb2.FAILED,
    "finalized": control_pb2.FINALIZED,
    "rolled_back": control_pb2.ROLLED_BACK,
}
#: Phases of the slots a status lists without include_slots.
_SHOWN_PHASES = frozenset({"starting", "copying", "completing", "failed", "rolled_back"})


def migration_status(
    m: Migration, server_id: int, *, changed: bool = False, include_slots: bool = False
) -> control_pb2.MigrationStatus:
    rec = m.record
    # Polled while the migration runs: the counts as kept, details only for what is shown.
    counts = dict.fromkeys(PHASE_NAMES, 0)
    counts.update({phase: len(slots) for phase, slots in m.by_phase.items()})
    shown = (
        m.slots.items()
        if include_slots
        else [(s, m.slots[s]) for phase in _SHOWN_PHASES for s in m.by_phase.get(phase, ())]
    )
    slots = [_slot_status(_fields(run)) for _, run in sorted(shown, key=lambda item: item[0])]
    in_flight = counts["starting"] + counts["copying"] + counts["completing"]
    return control_pb2.MigrationStatus(
        migration_id=rec.migration_id,
        state=rec.state,
        source_id=server_id,
        target_id=rec.target_id,
        target_control=rec.target_control,
        slots_total=len(m.slots),
        slots_pending=counts["pending"],
        slots_in_flight=in_flight,
        slots_done=counts["done"] + counts["finalized"],
        slots_skipped=counts["skipped"],
        slots_failed=counts["failed"],
        slots_rolled_back=counts["rolled_back"],
        keys_copied=m.keys_copied,
        keys_remaining_estimate=max(m.keys_estimate - m.keys_copied, 0),
        started=rec.started,
        finished=rec.finished,
        error=rec.error,
        slots=slots,
        changed=changed,
        batch_keys=rec.batch_keys,
        rate_keys_per_second=rec.rate_keys_per_second,
        parallel_slots=rec.parallel_slots,
        service=rec.service,
    )


#: Slots whose status :func:`migration_status_in_steps` builds between two turns of the loop.
STATUS_STEP = 512


async def migration_status_in_steps(
    m: Migration, server_id: int, *, include_slots: bool = False, step: int = STATUS_STEP
) -> control_pb2.MigrationStatus:
    """:func:`migration_status`, giving the event loop back while it builds a long slot list.

    Every slot's status costs ~19 ms of CPU for 8,192 slots, which on a source host at its CPU
    quota held the data path (and every client) ~80 ms per call; a controller asks for it
    three times as a migration ends (issue #14). The status is of one moment: counts and
    slots are read in one step, only the messages are built in several."""
    if not include_slots:
        return migration_status(m, server_id)
    snapshot = [_fields(run) for _, run in sorted(m.slots.items())]
    status = migration_status(m, server_id)
    del status.slots[:]
    for i in range(0, len(snapshot), step):
        await asyncio.sleep(0)
        status.slots.extend(_slot_status(f) for f in snapshot[i : i + step])
    return status


_Fields = tuple[int, str, int, int, float, float, float, int, str]


def _fields(run: SlotRun) -> _Fields:
    return (
        run.slot,
        run.phase,
        run.keys_copied,
        run.keys_total,
        run.started,
        run.frozen,
        run.finished,
        run.attempts,
        run.error,
    )


def _slot_status(f: _Fields) -> control_pb2.SlotStatus:
    slot, phase, keys_copied, keys_total, started, frozen, finished, attempts, error = f
    return control_pb2.SlotStatus(
        slot=slot,
        phase=PHASE_NAMES[phase],
        keys_copied=keys_copied,
        keys_total=keys_total,
        started=started,
        frozen=frozen,
        finished=finished,
        attempts=attempts,
        error=error,
    )
