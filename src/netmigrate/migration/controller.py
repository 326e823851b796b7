"""The migration controller: plan, run, status, abort, resume, finalize, reconcile.

See the package docstring (:mod:`netmigrate.migration`) for the API summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.migration.agents import AgentClient
from netmigrate.migration.connections import Connections, connections
from netmigrate.migration.model import (
    AgentEndpoint,
    FinalizeResult,
    KeyspaceRef,
    MigrationError,
    MigrationOptions,
    MigrationResult,
    Plan,
    Progress,
    ReconcileResult,
    SlotResult,
    migration_id_for,
    normalize_slots,
)
from netmigrate.migration.switch_view import (
    SwitchLink,
    check_switch,
    effective,
    read_slot_entries,
    read_slots,
    write_slots,
)
from netmigrate.protocol.slotset import from_ranges, to_ranges

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]

_PHASES = {v: k.lower() for k, v in control_pb2.SlotPhase.items()}
_RUNNING = frozenset({"RUNNING", "ABORTING"})


def _slot_results(status: control_pb2.MigrationStatus) -> list[SlotResult]:
    return [
        SlotResult(
            slot=s.slot,
            outcome=_PHASES.get(s.phase, "unknown"),
            keys_copied=s.keys_copied,
            keys_total=s.keys_total,
            started=s.started,
            frozen=s.frozen,
            finished=s.finished,
            attempts=s.attempts,
            error=s.error,
        )
        for s in status.slots
    ]


def result_from_status(
    status: control_pb2.MigrationStatus, *, changed: bool, message: str
) -> MigrationResult:
    return MigrationResult(
        migration_id=status.migration_id,
        state=status.state,
        changed=changed,
        message=message,
        source_id=status.source_id,
        target_id=status.target_id,
        slots_total=status.slots_total,
        slots_done=status.slots_done,
        slots_skipped=status.slots_skipped,
        slots_failed=status.slots_failed,
        slots_pending=status.slots_pending,
        slots_rolled_back=status.slots_rolled_back,
        keys_copied=status.keys_copied,
        started=status.started,
        finished=status.finished,
        slots=_slot_results(status),
    )


class _RateMeter:
    """Keys per second over the last few seconds, for progress and ETA."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.samples: list[tuple[float, int]] = []

    def add(self, t: float, keys: int) -> float:
        self.samples.append((t, keys))
        while len(self.samples) > 2 and self.samples[0][0] < t - self.window:
            self.samples.pop(0)
        (t0, k0), (t1, k1) = self.samples[0], self.samples[-1]
        return (k1 - k0) / (t1 - t0) if t1 > t0 else 0.0


def progress_of(status: control_pb2.MigrationStatus, started: float, meter: _RateMeter) -> Progress:
    now = time.monotonic()
    rate = meter.add(now, status.keys_copied)
    remaining = status.keys_remaining_estimate
    eta = None
    if rate > 0:
        eta = remaining / rate
    elif status.slots_pending == 0 and status.slots_in_flight == 0:
        eta = 0.0
    return Progress(
        migration_id=status.migration_id,
        state=status.state,
        slots_total=status.slots_total,
        slots_done=status.slots_done,
        slots_skipped=status.slots_skipped,
        slots_failed=status.slots_failed,
        slots_in_flight=status.slots_in_flight,
        slots_pending=status.slots_pending,
        keys_copied=status.keys_copied,
        keys_remaining=remaining,
        elapsed=now - started,
        keys_per_second=rate,
        eta=eta,
    )


async def _prepare(
    src: AgentClient, dst: AgentClient, keyspace: KeyspaceRef, switch: SwitchLink
) -> None:
    """Both agents reachable and who they claim; the switch ready to steer between them."""
    await asyncio.gather(src.identify(keyspace.keyspace_id), dst.identify(keyspace.keyspace_id))
    if switch.switch is not None:
        async with switch.step() as session:
            await check_switch(
                session,
                keyspace,
                [src.endpoint.server_id, dst.endpoint.server_id],
                source=src.endpoint.server_id,
            )


async def plan(
    source: AgentEndpoint,
    target: AgentEndpoint,
    slots: Iterable[int],
    *,
    keyspace: KeyspaceRef,
    switch: Any = None,
    migration_id: str | None = None,
) -> Plan:
    """Check mode: what :func:`run` would do. Nothing is changed anywhere."""
    wanted = normalize_slots(slots)
    mid = migration_id or migration_id_for(
        keyspace.keyspace_id, source.server_id, target.server_id, wanted
    )
    async with connections() as conns:
        src, dst = conns.agent(source), conns.agent(target)
        await _prepare(src, dst, keyspace, conns.switch(switch))
        mid, existing = await _current_run(src, mid, wanted, derived=migration_id is None)
        if existing is not None:
            return await _plan_existing(src, existing)
        status = await src.start(
            mid, wanted, target, service=keyspace.service, batch=1, rate=0, parallel=1, dry_run=True
        )
    refused = [(r.start, r.end) for r in status.refused]
    refused_set = from_ranges(refused)
    by_phase: dict[str, list[int]] = {}
    for s in status.slots:
        by_phase.setdefault(_PHASES.get(s.phase, "unknown"), []).append(s.slot)
    move = [s for s in by_phase.get("pending", []) if s not in refused_set]
    skipped_slots = by_phase.get("skipped", [])
    message = f"{len(move)} slots ({status.keys_remaining_estimate} keys) would move"
    if refused:
        message += f"; {len(refused_set)} slots are refused (owned by neither agent)"
    return Plan(
        migration_id=mid,
        move=to_ranges(move),
        skipped=to_ranges(skipped_slots),
        refused=refused,
        slots_to_move=len(move),
        keys=status.keys_remaining_estimate,
        changed=bool(move) and not refused,
        message=message,
    )


async def _plan_existing(src: AgentClient, existing: control_pb2.MigrationStatus) -> Plan:
    """What running an existing migration again would do: finish it, or finalize it."""
    mid = existing.migration_id
    (full,) = await src.status(mid, include_slots=True)
    by_phase: dict[str, list[int]] = {}
    for s in full.slots:
        by_phase.setdefault(_PHASES.get(s.phase, "unknown"), []).append(s.slot)
    finished = {"done", "finalized", "skipped"}
    remaining = sorted(s for ph, slots in by_phase.items() if ph not in finished for s in slots)
    skipped = by_phase.get("skipped", [])
    if full.state == "FINALIZED":
        message = f"migration {mid} is finalized: nothing to do"
    elif remaining:
        message = f"migration {mid} is {full.state.lower()}: {len(remaining)} slots would move"
    else:
        message = f"migration {mid} is done: its moved keys would be finalized"
    return Plan(
        migration_id=mid,
        move=to_ranges(remaining),
        skipped=to_ranges(skipped),
        refused=[],
        slots_to_move=len(remaining),
        keys=full.keys_remaining_estimate,
        changed=full.state != "FINALIZED",
        message=message,
    )


async def _existing(src: AgentClient, mid: str) -> control_pb2.MigrationStatus | None:
    try:
        found = await src.status(mid)
    except MigrationError as e:
        if e.code == "NOT_FOUND":
            return None
        raise
    return found[0] if found else None


async def _apply_rate(
    src: AgentClient, existing: control_pb2.MigrationStatus, rate: int | None
) -> bool:
    """Give an unfinished migration the rate asked for (None: keep its own)."""
    if rate is None or existing.state in ("DONE", "FINALIZED"):
        return False
    if existing.rate_keys_per_second == rate:
        return False
    return (await src.set_rate(existing.migration_id, rate)).changed


async def set_rate(source: AgentEndpoint, migration_id: str, rate: int) -> MigrationResult:
    """Change the rate limit of a migration, running or not (0: none). Idempotent."""
    if rate < 0:
        raise ValueError("rate must be >= 0")
    async with connections() as conns:
        status = await conns.agent(source).set_rate(migration_id, rate)
    message = f"migration {migration_id}: rate limit {rate or 'none'}"
    if not status.changed:
        message += " already"
    return result_from_status(status, changed=status.changed, message=message)


def _run_id(base: str, generation: int) -> str:
    return base if generation == 1 else f"{base}.{generation}"


async def _latest_run(
    src: AgentClient, base: str
) -> tuple[int, control_pb2.MigrationStatus | None]:
    """The latest run of a derived id (``BASE``, ``BASE.2``...): (generation, its status).
    A later run exists only once the one before it was finalized."""
    generation, found = 1, await _existing(src, base)
    while found is not None and found.state == "FINALIZED":
        later = await _existing(src, _run_id(base, generation + 1))
        if later is None:
            break
        generation, found = generation + 1, later
    return generation, found


async def current_migration_id(
    source: AgentEndpoint, keyspace: KeyspaceRef, target: AgentEndpoint, slots: Iterable[int]
) -> str:
    """The id of the latest run of the migration these arguments derive (``BASE``,
    ``BASE.2``...): what abort, resume and set_rate act on when no id is given."""
    wanted = normalize_slots(slots)
    base = migration_id_for(keyspace.keyspace_id, source.server_id, target.server_id, wanted)
    async with connections() as conns:
        generation, _ = await _latest_run(conns.agent(source), base)
    return _run_id(base, generation)


def _owned(reply: control_pb2.GetSlotsResponse) -> set[int]:
    return from_ranges((r.start, r.end) for r in reply.owned)


async def _current_run(
    src: AgentClient, base: str, wanted: list[int], *, derived: bool
) -> tuple[str, control_pb2.MigrationStatus | None]:
    """The migration id a request refers to now, and that migration if it exists.

    A derived id names the request (these slots, this source, this target), not one run of
    it. Once a run is finalized and a later migration has brought some of its slots back to
    the source, the same request means moving them again: a new run, ``BASE.2``, ``BASE.3``...
    Until then running it again changes nothing. An id the caller chose is taken as is.
    """
    if not derived:
        return base, await _existing(src, base)
    generation, found = await _latest_run(src, base)
    moved_back = (
        found is not None
        and found.state == "FINALIZED"
        and bool(_owned(await src.slots()) & set(wanted))
    )
    if moved_back:
        return _run_id(base, generation + 1), None
    return _run_id(base, generation), found


async def wait(
    source: AgentEndpoint,
    migration_id: str,
    *,
    progress: ProgressCallback | None = None,
    poll: float = 0.2,
    timeout: float | None = None,
    unreachable: float = 10.0,
) -> control_pb2.MigrationStatus:
    """Poll the source agent until the migration is no longer RUNNING / ABORTING.

    An unreachable source (restarting, say: it continues its migrations when it comes back)
    is waited for up to ``unreachable`` seconds, then MigrationError (code UNAVAILABLE).
    """
    started = time.monotonic()
    meter = _RateMeter()
    unreachable_since: float | None = None
    # Each poll waits up to a few seconds for a reconnecting channel (a restarted source).
    call = {"timeout": min(unreachable, 5.0) or 1.0, "wait_for_ready": True}
    async with connections() as conns:
        src = conns.agent(source)
        while True:
            try:
                (status,) = await src.status(migration_id, **call)
                unreachable_since = None
            except MigrationError as e:
                if e.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > unreachable:
                    raise
                await asyncio.sleep(poll)
                continue
            if progress is not None:
                progress(progress_of(status, started, meter))
            if status.state not in _RUNNING:
                (full,) = await src.status(migration_id, include_slots=True, **call)
                return full
            if timeout is not None and time.monotonic() - started > timeout:
                raise MigrationError(
                    f"migration {migration_id} still {status.state} after {timeout:g} s "
                    "(it goes on; use status / abort)",
                    code="DEADLINE_EXCEEDED",
                    result=result_from_status(status, changed=True, message="timed out"),
                )
            await asyncio.sleep(poll)


async def run(
    source: AgentEndpoint,
    target: AgentEndpoint,
    slots: Iterable[int],
    *,
    keyspace: KeyspaceRef,
    switch: Any = None,
    options: MigrationOptions | None = None,
    progress: ProgressCallback | None = None,
    migration_id: str | None = None,
    finalize: bool = True,
    timeout: float | None = None,
) -> MigrationResult:
    """Migrate ``slots`` from ``source`` to ``target`` and (by default) finalize.

    Idempotent: the migration id is derived from the request unless given; running a finished
    migration again returns ``changed=False``; a failed or aborted one is resumed.
    """
    opts = options or MigrationOptions()
    wanted = normalize_slots(slots)
    mid = migration_id or migration_id_for(
        keyspace.keyspace_id, source.server_id, target.server_id, wanted
    )
    async with connections() as conns:
        src, dst = conns.agent(source), conns.agent(target)
        mid, existing = await _current_run(src, mid, wanted, derived=migration_id is None)
        if existing is not None and existing.state == "FINALIZED":
            (full,) = await src.status(mid, include_slots=True)
            done = result_from_status(
                full, changed=False, message=f"migration {mid} is finished already: nothing to do"
            )
            if finalize and switch is not None:
                # What finalize verified then is verified again, so that a caller (migrate.yml)
                # can rely on the result whether or not this call moved anything. Slots moved on
                # since by another migration are that migration's to verify.
                owned = _owned(await dst.slots())
                moved = [
                    s.slot
                    for s in full.slots
                    if _PHASES.get(s.phase) == "finalized" and s.slot in owned
                ]
                done.finalize = FinalizeResult()
                if moved:
                    reconciled = await _verify_switch(
                        conns.switch(switch),
                        switch,
                        keyspace,
                        source,
                        target,
                        moved,
                        repair=opts.repair_switch,
                        consequence="clients reach the moved keys at the wrong server",
                    )
                    done.finalize = FinalizeResult(
                        changed=bool(reconciled), switch_verified=True, slots_reconciled=reconciled
                    )
                    if reconciled:
                        done.changed = True
                        done.message = (
                            f"migration {mid} is finished already; {reconciled} moved slots the "
                            "switch had lost were written back"
                        )
            return done
        await _prepare(src, dst, keyspace, conns.switch(switch))
        if existing is None:
            status = await src.start(
                mid,
                wanted,
                target,
                service=keyspace.service,
                batch=opts.batch,
                rate=opts.rate or 0,
                parallel=opts.parallel,
            )
            changed = status.changed
        else:
            rate_changed = await _apply_rate(src, existing, opts.rate)
            if existing.state in ("FAILED", "ABORTED"):
                await src.resume(mid)
                changed = True
            else:
                changed = existing.state in _RUNNING or rate_changed
        final = await wait(
            source,
            mid,
            progress=progress,
            poll=opts.poll,
            timeout=timeout,
            unreachable=opts.source_unreachable,
        )
        if final.state != "DONE" and final.state != "FINALIZED":
            result = result_from_status(
                final,
                changed=changed,
                message=f"migration {mid} ended {final.state}: {final.error}",
            )
            if final.state == "ABORTED":
                return result
            if final.slots_rolled_back and switch is not None:
                # The source owns those slots again; the switch still sends their writes to
                # the target, which refuses them: point it back (reconcile writes what the
                # agents say, and only slots of these two agents).
                fixed = await reconcile(switch, keyspace, [source, target])
                result.message += (
                    f" ({final.slots_rolled_back} slots rolled back to server "
                    f"{source.server_id}; {fixed.slots_written} switch entries written back)"
                )
            raise MigrationError(result.message, code=final.state, result=result)
        result = result_from_status(final, changed=changed, message=f"migration {mid} done")
        if finalize and final.state == "DONE":
            result.finalize = await _finalize(
                source, target, mid, keyspace, switch, opts.grace, repair=opts.repair_switch
            )
            result.changed = result.changed or result.finalize.changed
            (full,) = await src.status(mid, include_slots=True)
            done = result_from_status(full, changed=result.changed, message=result.message)
            done.finalize = result.finalize
            result = done
    if not result.changed:
        result.message = f"migration {mid} is finished already: nothing to do"
    return result


async def _switch_disagrees(
    switch: SwitchLink, keyspace: KeyspaceRef, target: AgentEndpoint, moved: list[int]
) -> dict[int, tuple[int, int]]:
    """Moved slots the switch does not send to ``target`` (slot -> its entry)."""
    async with switch.step() as session:
        facts = await check_switch(session, keyspace, [target.server_id])
        have = await read_slots(session, keyspace, moved, facts=facts)
    return {
        s: e for s, e in have.items() if effective(e, facts.default_owner) != (target.server_id, 0)
    }


async def _verify_switch(
    link: SwitchLink,
    switch: Any,
    keyspace: KeyspaceRef,
    source: AgentEndpoint,
    target: AgentEndpoint,
    moved: list[int],
    *,
    repair: bool,
    consequence: str = "the moved keys are kept at the source",
) -> int:
    """Check (over the run's session ``link`` to ``switch``) that the switch sends every
    ``moved`` slot to ``target``; the slots written back first (with ``repair``), or
    MigrationError (FAILED_PRECONDITION) if it disagrees, ending with ``consequence``."""
    reconciled = 0
    wrong = await _switch_disagrees(link, keyspace, target, moved)
    if wrong and repair:
        # A switch restarted during the migration lost the slots moved before; the agents
        # know where they are. Only slots of these two agents are touched.
        log.warning("the switch lost %d moved slots; reconciling them", len(wrong))
        fixed = await reconcile(switch, keyspace, [source, target])
        reconciled = fixed.slots_written
        wrong = await _switch_disagrees(link, keyspace, target, moved)
    if wrong:
        first = min(wrong)
        raise MigrationError(
            f"the switch disagrees with the agents on {len(wrong)} moved slots (slot "
            f"{first}: owner/target {wrong[first]}, expected {target.server_id}/0); "
            f"run reconcile first: {consequence}",
            code="FAILED_PRECONDITION",
        )
    return reconciled


async def _finalize(
    source: AgentEndpoint,
    target: AgentEndpoint,
    mid: str,
    keyspace: KeyspaceRef,
    switch: Any,
    grace: float,
    *,
    repair: bool = False,
) -> FinalizeResult:
    out = FinalizeResult()
    async with connections() as conns:
        src = conns.agent(source)
        (status,) = await src.status(mid, include_slots=True)
        moved = [s.slot for s in status.slots if _PHASES.get(s.phase) == "done"]
        if not moved:
            return out
        if switch is not None:
            out.slots_reconciled = await _verify_switch(
                conns.switch(switch), switch, keyspace, source, target, moved, repair=repair
            )
            out.switch_verified = True
        reply = await src.finalize(mid, grace)
    out.changed = reply.changed or bool(out.slots_reconciled)
    out.keys_deleted = reply.keys_deleted
    out.slots_finalized = reply.slots_finalized
    return out


async def finalize(
    source: AgentEndpoint,
    target: AgentEndpoint,
    migration_id: str,
    *,
    keyspace: KeyspaceRef,
    switch: Any = None,
    grace: float = 1.0,
    repair: bool = False,
) -> FinalizeResult:
    """Verify the switch (when given) and delete the moved keys at the source. Idempotent.

    With ``repair``, moved slots the switch lost are written back first (as reconcile does);
    without it such a switch stops finalize with MigrationError and the keys are kept."""
    return await _finalize(source, target, migration_id, keyspace, switch, grace, repair=repair)


async def status(
    source: AgentEndpoint, migration_id: str | None = None, *, include_slots: bool = False
) -> list[MigrationResult]:
    async with connections() as conns:
        found = await conns.agent(source).status(migration_id or "", include_slots=include_slots)
    return [result_from_status(s, changed=False, message=s.state.lower()) for s in found]


async def abort(
    source: AgentEndpoint,
    migration_id: str,
    *,
    wait_done: bool = True,
    progress: ProgressCallback | None = None,
    poll: float = 0.2,
) -> MigrationResult:
    """Start no further slot; with ``wait_done`` wait until the slots in flight finished."""
    async with connections() as conns:
        first = await conns.agent(source).abort(migration_id)
        if not wait_done:
            return result_from_status(first, changed=first.changed, message="aborting")
        final = await wait(source, migration_id, progress=progress, poll=poll)
    return result_from_status(
        final, changed=first.changed, message=f"migration {migration_id} is {final.state.lower()}"
    )


async def resume(
    source: AgentEndpoint,
    migration_id: str,
    *,
    target: AgentEndpoint | None = None,
    keyspace: KeyspaceRef | None = None,
    switch: Any = None,
    wait_done: bool = True,
    progress: ProgressCallback | None = None,
    finalize: bool = False,
    options: MigrationOptions | None = None,
) -> MigrationResult:
    """Continue a migration from the agents' persisted progress. ``finalize`` needs
    ``target`` and ``keyspace``."""
    opts = options or MigrationOptions()
    async with connections() as conns:
        src = conns.agent(source)
        if opts.rate is not None:
            await src.set_rate(migration_id, opts.rate)
        first = await src.resume(migration_id)
        if not wait_done:
            return result_from_status(first, changed=first.changed, message="resumed")
        final = await wait(
            source,
            migration_id,
            progress=progress,
            poll=opts.poll,
            unreachable=opts.source_unreachable,
        )
        result = result_from_status(
            final,
            changed=first.changed,
            message=f"migration {migration_id} is {final.state.lower()}",
        )
        if finalize and final.state == "DONE":
            if target is None or keyspace is None:
                raise ValueError("finalize needs target and keyspace")
            result.finalize = await _finalize(
                source,
                target,
                migration_id,
                keyspace,
                switch,
                opts.grace,
                repair=opts.repair_switch,
            )
    return result


_IN_FLIGHT = frozenset({"starting", "copying", "completing"})


@dataclass(frozen=True)
class _AgentView:
    """What the agents said about one slot: who owns it and where it is moving."""

    owner: int
    #: The server it is moving to (0: none).
    peer: int = 0
    #: The source's phase of that move ("" when only the target reported it).
    phase: str = ""
    #: True when the target has persisted the slot as migrating in.
    target_in: bool = False
    #: The owner's persisted epoch of the slot: the highest it used or accepted (0: none).
    owner_epoch: int = 0
    #: The epoch of the move to ``peer`` (0: none, or agents older than epochs).
    move_epoch: int = 0


def wanted_entry(view: _AgentView, have: tuple[int, int]) -> tuple[int, int]:
    """The slot map entry a slot needs, from the agents' view (read first) and the switch's
    entry (read after it, default owner resolved).

    Slots move forward only (docs/decisions.md D12): ``(A, 0) -> (A, B) -> (B, 0)``, and the
    switch moves first (it flips a slot when START / COMPLETE passes, before the target
    persists anything). So a switch that is at or ahead of the agents on the same move is right
    and kept: writing the agents' older view over it would undo a transition the source will
    never send again.
    """
    owner, peer = view.owner, view.peer
    if not peer:
        return (owner, 0)
    if have in ((owner, peer), (peer, 0)):
        return have
    if have == (owner, 0) and view.phase == "starting" and not view.target_in:
        return have  # START has not passed the switch yet; the source resends it
    return (owner, peer)


def wanted_epoch(view: _AgentView, entry: tuple[int, int]) -> int:
    """The epoch the switch must hold at least for a slot whose entry is (to be) ``entry``:
    that of the slot's last transition through the switch, as the agents know it (0: none
    to restore).

    A switch that restarted has every epoch at 0 (unknown), and lets any transition with an
    epoch above that flip a slot; restoring this one makes it drop those of earlier
    migrations again (TRANSITION_STALE). A move whose START has not flipped the switch yet
    (``entry`` is still the owner's alone) gets none: its START sets the epoch when it passes,
    and a write here could land just after that and put the entry back (as for
    :func:`wanted_entry`, reconcile leaves that slot to the source's resends).
    """
    if view.peer and view.move_epoch:
        return 0 if entry == (view.owner, 0) else view.move_epoch
    return view.owner_epoch


def _epochs(reply: control_pb2.GetSlotsResponse) -> dict[int, int]:
    return {s: r.epoch for r in reply.epochs for s in range(r.start, r.end + 1)}


def _agent_views(
    replies: Sequence[tuple[int, control_pb2.GetSlotsResponse]],
) -> tuple[dict[int, _AgentView], dict[int, str]]:
    owners: dict[int, list[int]] = {}
    out: dict[int, tuple[int, str]] = {}
    incoming: dict[int, int] = {}
    epochs: dict[int, dict[int, int]] = {}
    #: slot -> the epoch of its move in flight (the source's word over the target's).
    moves: dict[int, int] = {}
    for server_id, reply in replies:
        epochs[server_id] = _epochs(reply)
        for r in reply.owned:
            for s in range(r.start, r.end + 1):
                owners.setdefault(s, []).append(server_id)
        for m in reply.migrations:
            if m.role == "in":
                incoming[m.slot] = server_id
                moves.setdefault(m.slot, m.epoch)
            elif m.role == "out" and m.phase in _IN_FLIGHT:
                out[m.slot] = (m.peer_id, m.phase)
                moves[m.slot] = m.epoch
    conflicts: dict[int, str] = {}
    views: dict[int, _AgentView] = {}
    for slot, ids in owners.items():
        if len(ids) > 1:
            conflicts[slot] = f"owned by servers {sorted(ids)}"
            continue
        peer, phase = out.get(slot, (incoming.get(slot, 0), ""))
        if peer == ids[0]:
            peer = 0
        views[slot] = _AgentView(
            ids[0],
            peer,
            phase,
            incoming.get(slot) == peer != 0,
            owner_epoch=epochs[ids[0]].get(slot, 0),
            move_epoch=moves.get(slot, 0) if peer else 0,
        )
    for slot, target in incoming.items():
        if slot not in owners:
            conflicts[slot] = f"server {target} has it migrating in, but no agent owns it"
    return views, conflicts


async def _identify_all(
    conns: Connections, agents: Sequence[AgentEndpoint], keyspace: KeyspaceRef
) -> list[tuple[int, control_pb2.GetSlotsResponse]]:
    out = []
    for ep in agents:
        out.append((ep.server_id, await conns.agent(ep).identify(keyspace.keyspace_id)))
    return out


async def reconcile(
    switch: Any,
    keyspace: KeyspaceRef,
    agents: Sequence[AgentEndpoint],
    *,
    check: bool = False,
) -> ReconcileResult:
    """Rebuild the switch's slot map of ``keyspace`` from the agents' persisted state.

    A slot owned by one agent gets ``owner=that agent, target=0``; a slot in flight (its source
    owns it and moves it to a target) gets ``owner=source, target=target`` unless the switch is
    ahead on that move already (:func:`wanted_entry`). Each slot's transition epoch on the
    switch is raised to the one the agents report (:func:`wanted_epoch`), so that a switch
    that lost its epochs (a restart) drops earlier migrations' transitions again. Slots nobody
    owns are left as they are, slots two agents claim are reported and left untouched.
    Migrations may keep running: the agents are read before the switch and once more before
    writing, and a slot whose wanted entry or epoch changed in between is left for the next
    reconcile. With ``check`` nothing is written.
    """
    if switch is None:
        raise ValueError("reconcile needs a switch")

    def wanted(view: _AgentView, have: tuple[int, int]) -> tuple[tuple[int, int], int]:
        entry = wanted_entry(view, have)
        return entry, wanted_epoch(view, entry)

    async with connections() as conns:
        views, conflicts = _agent_views(await _identify_all(conns, agents, keyspace))
        async with conns.switch(switch).step() as session:
            facts = await check_switch(session, keyspace, sorted({e.server_id for e in agents}))
            raw = await read_slot_entries(
                session, keyspace, sorted(views), facts=facts, epochs=True
            )
            have = {s: effective(e.pair, facts.default_owner) for s, e in raw.items()}
            changes = {
                s: (entry, epoch)
                for s, v in views.items()
                for entry, epoch in [wanted(v, have[s])]
                if entry != have[s] or epoch > raw[s].epoch
            }
            if changes and not check:
                # A transition between the first read and now would make the write stale.
                again, _ = _agent_views(await _identify_all(conns, agents, keyspace))
                changes = {
                    s: w
                    for s, w in changes.items()
                    if s in again and wanted(again[s], have[s]) == w
                }
                if changes:
                    await write_slots(
                        session,
                        keyspace,
                        {s: entry for s, (entry, _) in changes.items()},
                        {s: epoch for s, (_, epoch) in changes.items()},
                    )
    moved = {s: entry for s, (entry, _) in changes.items() if entry != have[s]}
    raised = sum(1 for s, (_, epoch) in changes.items() if epoch > raw[s].epoch)
    diff = {s: {"before": list(have[s]), "after": list(w)} for s, w in sorted(moved.items())[:100]}
    verb = "would change" if check else "changed"
    message = f"{verb} {len(moved)} of {len(views)} slots"
    if raised:
        message += f"; {'would restore' if check else 'restored'} the epochs of {raised} slots"
    if conflicts:
        message += f"; {len(conflicts)} slots in conflict left untouched"
    return ReconcileResult(
        changed=bool(changes),
        slots_checked=len(views),
        diff=diff,
        slots_written=0 if check else len(changes),
        conflicts=dict(sorted(conflicts.items())[:100]),
        message=message,
        epochs_raised=raised,
        slots_to_write=len(changes),
    )
