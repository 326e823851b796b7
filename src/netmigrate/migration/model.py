"""The controller's records: endpoints, options, progress and results (all JSON-friendly)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# ControlTls is the controller's name for the agent channel's TLS options (re-exported).
from netmigrate.agent.channel import ControlTls as ControlTls
from netmigrate.protocol.constants import MAX_SERVER_ID, SLOT_COUNT
from netmigrate.protocol.slotset import to_ranges


class MigrationError(Exception):
    """A migration step failed; the message says which and why (never a secret)."""

    def __init__(self, message: str, *, code: str = "FAILED", result: Any = None) -> None:
        super().__init__(message)
        self.code = code
        #: The MigrationResult so far, when there is one.
        self.result = result


@dataclass(frozen=True)
class AgentEndpoint:
    server_id: int
    #: The agent's control service, HOST:PORT (as the controller and the peer agent reach it).
    control: str
    #: The agent's UDP data address, HOST:PORT; checked against what the agent reports when set.
    data: str = ""
    tls: ControlTls | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.server_id <= MAX_SERVER_ID:
            raise ValueError(f"server id {self.server_id} out of range 1..{MAX_SERVER_ID}")
        if ":" not in self.control:
            raise ValueError(f"control address {self.control!r} is not HOST:PORT")


@dataclass(frozen=True)
class SwitchEndpoint:
    """A P4Runtime switch (lab switch: device id 1; BMv2: 0)."""

    address: str
    device_id: int = 1
    election_id: int = 10
    role: str = ""
    #: netmigrate.p4rt.TlsOptions, when the switch speaks TLS.
    tls: Any = None
    #: P4Info file; by default the switch's own is used.
    p4info: Path | None = None


@dataclass(frozen=True)
class KeyspaceRef:
    keyspace_id: int
    #: The keyspace's service address (what clients send to, the switch's keyspace table key).
    address: str
    port: int

    @property
    def service(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class MigrationOptions:
    #: Keys per copy batch.
    batch: int = 256
    #: Copy rate limit, keys per second over all slots (0: unlimited). None: unlimited for a
    #: new migration, and an existing one keeps its rate; a number changes an existing one's.
    rate: int | None = None
    #: Slots in flight at once.
    parallel: int = 4
    #: Seconds between a slot's completion and the deletion of its keys at the source.
    grace: float = 1.0
    #: Seconds between status polls (and progress callbacks).
    poll: float = 0.2
    #: How long waiting tolerates an unreachable source agent (restarting: it continues its
    #: migrations by itself) before it gives up with MigrationError (the migration goes on).
    source_unreachable: float = 10.0
    #: Before finalize, rewrite moved slots a restarted switch lost (from the agents' state,
    #: as :func:`~netmigrate.migration.reconcile` does) instead of stopping with an error.
    repair_switch: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 65535:
            raise ValueError("batch must be 1..65535")
        if self.rate is not None and self.rate < 0:
            raise ValueError("rate must be >= 0")
        if not 1 <= self.parallel <= 256:
            raise ValueError("parallel must be 1..256")
        if not 0 <= self.grace <= 3600:
            raise ValueError("grace must be 0..3600 seconds")
        if self.poll <= 0:
            raise ValueError("poll must be > 0")
        if self.source_unreachable < 0:
            raise ValueError("source_unreachable must be >= 0")


@dataclass
class Progress:
    migration_id: str
    state: str
    slots_total: int
    slots_done: int
    slots_skipped: int
    slots_failed: int
    slots_in_flight: int
    slots_pending: int
    keys_copied: int
    keys_remaining: int
    elapsed: float
    keys_per_second: float
    #: Seconds to go, estimated from the key rate (None until there is one).
    eta: float | None


@dataclass
class SlotResult:
    slot: int
    #: pending, starting, copying, completing, done, skipped, failed, finalized
    outcome: str
    keys_copied: int = 0
    keys_total: int = 0
    #: Unix times; 0 when not reached.
    started: float = 0.0
    frozen: float = 0.0
    finished: float = 0.0
    attempts: int = 0
    error: str = ""

    @property
    def duration(self) -> float:
        return self.finished - self.started if self.finished and self.started else 0.0


@dataclass
class FinalizeResult:
    changed: bool = False
    keys_deleted: int = 0
    slots_finalized: int = 0
    #: True when the switch's slot map was read and matched the agents for every moved slot.
    switch_verified: bool = False
    #: Moved slots the switch had lost (a restart) and finalize wrote back before verifying.
    slots_reconciled: int = 0


@dataclass
class MigrationResult:
    migration_id: str
    #: DONE, FINALIZED, ABORTED, FAILED (the source agent's word).
    state: str
    #: False when nothing had to be done (a finished migration run again).
    changed: bool
    message: str
    source_id: int
    target_id: int
    slots_total: int = 0
    slots_done: int = 0
    slots_skipped: int = 0
    slots_failed: int = 0
    slots_pending: int = 0
    #: Slots that could not move and went back to the source (#12.6).
    slots_rolled_back: int = 0
    keys_copied: int = 0
    started: float = 0.0
    finished: float = 0.0
    slots: list[SlotResult] = field(default_factory=list)
    finalize: FinalizeResult | None = None

    @property
    def duration(self) -> float:
        return self.finished - self.started if self.finished and self.started else 0.0

    def to_json(self, *, slots: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["duration"] = self.duration
        if slots:
            data["slots"] = [
                {**asdict(s), "duration": s.duration} for s in self.slots if s.outcome != "skipped"
            ]
        else:
            del data["slots"]
        return data


@dataclass
class Plan:
    migration_id: str
    #: Inclusive ranges.
    move: list[tuple[int, int]]
    skipped: list[tuple[int, int]]
    refused: list[tuple[int, int]]
    slots_to_move: int
    keys: int
    #: True when running it would change something.
    changed: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileResult:
    changed: bool
    slots_checked: int
    #: slot -> {"before": [owner, target], "after": [owner, target]} (first 100).
    diff: dict[int, dict[str, list[int]]]
    slots_written: int
    #: Slots the agents disagree on (left untouched), with why.
    conflicts: dict[int, str]
    message: str
    #: Slots whose transition epoch on the switch was (with ``check``: would be) raised to
    #: the agents' (written with their entry, so counted in ``slots_written`` too).
    epochs_raised: int = 0
    #: Slots written or, with ``check``, that would be: entry changes and epoch-only ones
    #: (``diff`` lists the first 100 entry changes only).
    slots_to_write: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def normalize_slots(slots: Iterable[int]) -> list[int]:
    out = sorted(set(slots))
    if not out:
        raise ValueError("no slots given")
    if out[0] < 0 or out[-1] >= SLOT_COUNT:
        raise ValueError(f"slots must be within 0..{SLOT_COUNT - 1}")
    return out


def migration_id_for(keyspace: int, source: int, target: int, slots: Iterable[int]) -> str:
    """The default migration id: the same request always gets the same id (idempotence)."""
    # Always LO-HI (not the spec syntax): ids derived before must stay the same.
    ranges = ",".join(f"{lo}-{hi}" for lo, hi in to_ranges(slots))
    digest = hashlib.sha256(ranges.encode()).hexdigest()[:12]
    return f"ks{keyspace}-s{source}-to-s{target}-{digest}"
