"""What the source side knows of a migration in memory, its limits, and its errors.

The persisted part of a migration is a :class:`MigrationRecord`, of a slot in flight a
:class:`SlotRecord` (``migration_store``); :class:`Migration` and :class:`SlotRun` add the
progress that only this process needs (counters, the running task, the rate limiter).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from netmigrate.agent.migration_store import MigrationRecord, SlotRecord
from netmigrate.agent.source.rate import RateLimiter

DEFAULT_BATCH = 256
MAX_BATCH = 65535
DEFAULT_PARALLEL = 1
MAX_PARALLEL = 256
#: A slot whose steps keep failing for this long is reported FAILED (resume continues it).
SLOT_RETRY_SECONDS = 30.0
RPC_TIMEOUT = 10.0

FINISHED_PHASES = frozenset({"done", "skipped", "finalized"})
ACTIVE_STATES = frozenset({"RUNNING", "ABORTING"})


class MigrationRequestError(Exception):
    """A control request that cannot be honoured; ``code`` is the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class StepFailed(Exception):
    pass


@dataclass
class SlotRun:
    """In-memory progress of one slot of a migration (the persisted part is a SlotRecord)."""

    slot: int
    phase: str = "pending"
    keys_copied: int = 0
    keys_total: int = 0
    started: float = 0.0
    frozen: float = 0.0
    finished: float = 0.0
    attempts: int = 0
    error: str = ""
    #: The slots of its migration per phase (``Migration.by_phase``), kept as the phase changes.
    by_phase: dict[str, set[int]] | None = field(default=None, repr=False, compare=False)


class _Phase:
    """``SlotRun.phase``: setting it moves the slot between the sets of ``by_phase``. A data
    descriptor on that one attribute, so that the others (counters set per key and per step)
    are set without a Python ``__setattr__`` call each."""

    def __get__(self, run: SlotRun | None, owner: type | None = None) -> str:
        if run is None:
            return "pending"  # the class attribute: the dataclass' default
        return run.__dict__["phase"]  # type: ignore[no-any-return]

    def __set__(self, run: SlotRun, value: str) -> None:
        d = run.__dict__
        by_phase = d.get("by_phase")
        if by_phase is not None:
            by_phase[d["phase"]].discard(run.slot)
            by_phase.setdefault(value, set()).add(run.slot)
        d["phase"] = value


SlotRun.phase = _Phase()  # type: ignore[assignment]


@dataclass
class Migration:
    record: MigrationRecord
    slots: dict[int, SlotRun]
    task: asyncio.Task[None] | None = None
    abort: bool = False
    keys_copied: int = 0
    keys_estimate: int = 0
    limiter: RateLimiter | None = None
    failures: list[str] = field(default_factory=list)
    #: One finalize at a time: several controllers may finish the same migration at once.
    finalizing: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: phase -> its slots, kept by the slots' runs: a status is polled several times a
    #: second, and counting 8,192 slots per poll cost the source (whose CPU bounds a
    #: migration) ~1 ms each time.
    by_phase: dict[str, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for slot, run in self.slots.items():
            self.by_phase.setdefault(run.phase, set()).add(slot)
            run.by_phase = self.by_phase

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


def slot_runs(mrec: MigrationRecord, records: dict[int, SlotRecord]) -> dict[int, SlotRun]:
    """The slots of a migration, each in the phase its persisted record says."""
    skipped = {s for lo, hi in mrec.skipped for s in range(lo, hi + 1)}
    runs: dict[int, SlotRun] = {}
    for slot in mrec.slot_set():
        run = SlotRun(slot)
        rec = records.get(slot)
        if slot in skipped:
            run.phase = "skipped"
        elif rec is not None and rec.role == "out" and rec.migration_id == mrec.migration_id:
            run.phase = rec.phase
            run.keys_copied, run.keys_total = rec.keys_copied, rec.keys_total
            run.started, run.frozen, run.finished = rec.started, rec.frozen, rec.finished
            run.attempts = rec.attempts
        runs[slot] = run
    return runs


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__
