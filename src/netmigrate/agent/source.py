"""The migration source's side (docs/migration.md, "Steps at the source").

Per slot: persist MIGRATING_OUT(starting) -> SLOT_START through the switch (resent until the
target acknowledges) -> the acknowledgement, handled in arrival order with client requests,
freezes the slot and puts a barrier into the Redis pipeline (every earlier request is applied
when it returns) -> persist "copying" -> the slot's request ids to the target -> the copy
(GETKEYSINSLOT, DUMP + PTTL, batches pipelined over one gRPC stream, each acknowledged) ->
persist "completing" -> SLOT_COMPLETE through the switch (resent until acknowledged) -> persist
NOT_OWNED ("done": the keys stay until finalize). Every step is idempotent, so any failure (or a
restart) continues from the persisted phase: "starting" and "copying" redo START, ids and copy;
"completing" resends COMPLETE.

Slots move in **waves** (up to ``parallel_slots`` slots and WAVE_KEYS keys): each step runs
once for the whole wave (one persisted change, the STARTs back to back, one id transfer, one
copy stream), so the per-slot cost is a fraction of a round trip. A slot that fails in a wave,
or was in flight when the migration (re)started, goes on alone from its persisted phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.config import ConfigError, RedisTarget, parse_host_port
from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.migration_store import MigrationRecord, MigrationStore, SlotRecord
from netmigrate.agent.peers import Peers
from netmigrate.agent.reserved import is_reserved
from netmigrate.agent.resp import RespConnection
from netmigrate.agent.resp import command as resp_command
from netmigrate.agent.restore import ttl_from_pttl
from netmigrate.agent.slots import OWNER_STATES, SlotState, SlotTable, to_ranges
from netmigrate.protocol.codec import Control, ErrorReply, Header, HeaderFields, encode
from netmigrate.protocol.constants import (
    F_KEYSPACE,
    F_OP,
    F_SLOT,
    F_SOURCE_ID,
    F_STATUS,
    F_TARGET_ID,
    MAX_SERVER_ID,
    REPLY_BIT,
    WRITE_OPS,
    Op,
    Status,
)

if TYPE_CHECKING:
    from netmigrate.agent.datapath import DataPath

log = logging.getLogger(__name__)

DEFAULT_BATCH = 256
MAX_BATCH = 65535
DEFAULT_PARALLEL = 1
MAX_PARALLEL = 256
#: Copy batches in flight per stream (the stream's pipelining).
COPY_WINDOW = 4
#: Keys a wave of slots may hold (counted before the freeze): the freeze of a slot lasts
#: until its whole wave is copied, so waves stay small; a slot with more keys goes alone.
WAVE_KEYS = 4096
#: Slots whose keys are counted per round trip when forming waves.
_COUNT_CHUNK = 1024
#: Keys asked for beyond a slot's count when listing it (see ``SourceSide._list``).
_LIST_MARGIN = 256
#: SLOT_START / SLOT_COMPLETE: first resend after this long, doubling up to the maximum.
TRANSITION_TIMEOUT = 0.2
TRANSITION_MAX_TIMEOUT = 1.0
TRANSITION_ATTEMPTS = 10
#: A slot whose steps keep failing for this long is reported FAILED (resume continues it).
SLOT_RETRY_SECONDS = 30.0
RPC_TIMEOUT = 10.0
_WRITE_OPS = frozenset(int(op) for op in WRITE_OPS)
_PING = b"*1\r\n$4\r\nPING\r\n"
#: DUMP key + PTTL key, formatted with (len, key, len, key).
_DUMP_PTTL = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"

PHASE_NAMES = {
    "pending": control_pb2.PENDING,
    "starting": control_pb2.STARTING,
    "copying": control_pb2.COPYING,
    "completing": control_pb2.COMPLETING,
    "done": control_pb2.DONE,
    "skipped": control_pb2.SKIPPED,
    "failed": control_pb2.FAILED,
    "finalized": control_pb2.FINALIZED,
}
_FINISHED_PHASES = frozenset({"done", "skipped", "finalized"})
_ACTIVE_STATES = frozenset({"RUNNING", "ABORTING"})
#: Phases of the slots a status lists without include_slots.
_SHOWN_PHASES = frozenset({"starting", "copying", "completing", "failed"})


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

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class RateLimiter:
    """Token bucket: at most ``rate`` tokens per second (0: unlimited). A migration takes one
    token per key it copies and one per slot it starts, so ``rate_keys_per_second`` also
    paces a migration of empty slots. A wave pays for its slots and keys (up to one second's
    worth) *before* it starts and then runs at full speed: pacing between waves, not inside
    them, keeps each slot's freeze (when its clients pay for double reads and pulls) short."""

    #: Longest sleep between two looks at the bucket, so that a new rate applies at once.
    MAX_WAIT = 0.2

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    def set_rate(self, rate: int) -> None:
        """Change the rate; a waiter sees it within MAX_WAIT (the tokens saved are kept,
        within one second's worth of the new rate)."""
        self._refill()
        self.rate = rate
        self._tokens = min(self._tokens, float(rate))

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate > 0:
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while self.rate > 0:
                self._refill()
                # A batch larger than one second's worth goes through once the bucket is full.
                need = min(float(n), float(self.rate))
                if self._tokens >= need:
                    self._tokens -= n
                    return
                await asyncio.sleep(min((need - self._tokens) / self.rate, self.MAX_WAIT))


class SourceSide:
    def __init__(
        self,
        *,
        datapath: DataPath,
        table: SlotTable,
        dedup: DedupWindow,
        store: MigrationStore,
        admin: Any,
        peers: Peers,
        keyspace: int,
        server_id: int,
        service: tuple[str, int] | None,
        control_address: str,
        redis_target: RedisTarget | None = None,
        slot_retry_seconds: float = SLOT_RETRY_SECONDS,
    ) -> None:
        self._dp = datapath
        self._table = table
        self._dedup = dedup
        self._store = store
        self._admin = admin
        self._peers = peers
        self._keyspace = keyspace
        self._server_id = server_id
        self._service = service
        #: How peers reach this agent's control service (when the controller does not say).
        self.control_address = control_address
        self.slot_retry_seconds = slot_retry_seconds
        self._redis_target = redis_target
        self._copy_redis: RespConnection | None = None
        self._migrations: dict[str, Migration] = {}
        #: Persisted source records of slots in flight or moved (slot -> record).
        self._records: dict[int, SlotRecord] = {}
        #: (op, slot) -> future of the target's acknowledgement: (status, message).
        self._acks: dict[tuple[int, int], asyncio.Future[tuple[int, str]]] = {}
        #: slot -> future that is True once every request before the freeze was applied.
        self._barriers: dict[int, asyncio.Future[bool]] = {}
        #: One StartMigration at a time: the same id twice must not launch two runs.
        self._start_lock = asyncio.Lock()
        self._client_id = secrets.randbits(32)
        self._counter = itertools.count(1)
        self.counters: dict[str, int] = {
            "source_transitions_sent": 0,
            "source_acks": 0,
            "source_stray_acks": 0,
            "source_keys_copied": 0,
            "source_batches": 0,
            "source_pulls_served": 0,
            "source_keys_finalized": 0,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self, records: dict[int, SlotRecord]) -> None:
        """Restore slots in flight and migrations after a restart; RUNNING ones continue."""
        loop = asyncio.get_running_loop()
        for slot, rec in records.items():
            if rec.role != "out":
                continue
            if rec.phase == "finalized":
                continue
            self._records[slot] = rec
            state = {
                "starting": SlotState.MIGRATING_OUT,
                "copying": SlotState.FROZEN,
                "completing": SlotState.FROZEN,
                "done": SlotState.MOVED,
            }[rec.phase]
            self._table.set_state([slot], state)
            if state == SlotState.FROZEN:
                # Nothing was in flight at startup: the freeze holds already.
                barrier = loop.create_future()
                barrier.set_result(True)
                self._barriers[slot] = barrier
        for mid, mrec in (await self._store.load_migrations()).items():
            m = Migration(mrec, self._slot_runs(mrec, records))
            self._migrations[mid] = m
        for m in self._migrations.values():
            if m.record.state in _ACTIVE_STATES:
                m.abort = m.record.state == "ABORTING"
                log.info("continuing migration %s after a restart", m.record.migration_id)
                self._launch(m)

    def _slot_runs(
        self, mrec: MigrationRecord, records: dict[int, SlotRecord]
    ) -> dict[int, SlotRun]:
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

    async def stop(self) -> None:
        tasks = [m.task for m in self._migrations.values() if m.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._copy_redis is not None:
            self._copy_redis.close()
            self._copy_redis = None
        self._store.close()

    def records(self) -> list[SlotRecord]:
        return [self._records[s] for s in sorted(self._records)]

    # -- the acknowledgements, from the data path ----------------------------------------

    def on_transition_reply(
        self, fields: HeaderFields, body: Any, commands: list[bytes], callbacks: list[Any]
    ) -> None:
        """The target's answer to SLOT_START / SLOT_COMPLETE, in arrival order."""
        op = fields[F_OP] & ~REPLY_BIT
        slot = fields[F_SLOT]
        rec = self._records.get(slot)
        if (
            rec is None
            or rec.peer != fields[F_TARGET_ID]
            or fields[F_SOURCE_ID] != self._server_id
            or fields[F_KEYSPACE] != self._keyspace
        ):
            self.counters["source_stray_acks"] += 1
            return
        self.counters["source_acks"] += 1
        status = fields[F_STATUS]
        message = body.message if isinstance(body, ErrorReply) else ""
        if op == Op.SLOT_START and status == Status.OK:
            state = self._table.state(slot)
            barrier = self._barriers.get(slot)
            if state == SlotState.MIGRATING_OUT or (
                state == SlotState.FROZEN
                and barrier is not None
                and barrier.done()
                and not barrier.result()
            ):
                # The freeze point: everything the switch sent here before it flipped the slot
                # arrived before this acknowledgement and is queued to Redis already. From now
                # on only double reads are served; the PING returns once all of it is applied.
                self._table.set_state([slot], SlotState.FROZEN)
                barrier = asyncio.get_running_loop().create_future()
                self._barriers[slot] = barrier
                commands.append(_PING)
                callbacks.append((_on_barrier, barrier))
        waiter = self._acks.get((op, slot))
        if waiter is not None and not waiter.done():
            waiter.set_result((status, message))

    # -- control requests ----------------------------------------------------------------

    async def start_migration(
        self, req: control_pb2.StartMigrationRequest
    ) -> control_pb2.MigrationStatus:
        async with self._start_lock:
            return await self._start_migration(req)

    async def _start_migration(
        self, req: control_pb2.StartMigrationRequest
    ) -> control_pb2.MigrationStatus:
        mrec = self._validate(req)
        existing = self._migrations.get(mrec.migration_id)
        if existing is not None:
            if not existing.record.same_request(mrec):
                raise MigrationRequestError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"migration {mrec.migration_id} exists with other slots or another target",
                )
            return self.status(existing, changed=False)
        info, target_owned = await self._target_slots(mrec)
        move, skipped, refused = self._classify(mrec, target_owned)
        for m in info.migrations:
            if m.slot in move:
                move.remove(m.slot)
                refused[m.slot] = (
                    f"server {mrec.target_id} has it {m.phase} ({m.role}) in migration "
                    f"{m.migration_id or '?'}: finish or finalize that first"
                )
        estimate = await self._count_keys(move)
        if req.dry_run:
            runs = {
                s: SlotRun(s, "skipped" if s in skipped else "pending") for s in mrec.slot_set()
            }
            m = Migration(mrec, runs, keys_estimate=estimate)
            m.record.state = "PLANNED"
            runs.update({s: SlotRun(s, "failed", error=why) for s, why in refused.items()})
            status = self.status(m, changed=False, include_slots=True)
            status.refused.extend(
                control_pb2.SlotRange(start=lo, end=hi) for lo, hi in to_ranges(refused)
            )
            return status
        if refused:
            text = ", ".join(f"{s}: {why}" for s, why in sorted(refused.items())[:5])
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{len(refused)} slots cannot move from server {self._server_id}: {text}{more}",
            )
        mrec.skipped = to_ranges(skipped)
        mrec.started = time.time()
        mrec.state = "RUNNING" if move else "DONE"
        if not move:
            mrec.finished = mrec.started
        await self._store.persist(migration=mrec)
        m = Migration(mrec, self._slot_runs(mrec, {}), keys_estimate=estimate)
        self._migrations[mrec.migration_id] = m
        log.info(
            "migration %s: %d slots to server %d (%d skipped, %d keys)",
            mrec.migration_id,
            len(move),
            mrec.target_id,
            len(skipped),
            estimate,
        )
        if move:
            self._launch(m)
        return self.status(m, changed=True)

    def _validate(self, req: control_pb2.StartMigrationRequest) -> MigrationRecord:
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if not req.migration_id or len(req.migration_id) > 200:
            raise MigrationRequestError(bad, "migration_id must be 1..200 characters")
        if not req.slots:
            raise MigrationRequestError(bad, "no slots given")
        slots: set[int] = set()
        for r in req.slots:
            if not r.start <= r.end < 16384:
                raise MigrationRequestError(bad, f"bad slot range {r.start}-{r.end}")
            slots.update(range(r.start, r.end + 1))
        if not 1 <= req.target_id <= MAX_SERVER_ID or req.target_id == self._server_id:
            raise MigrationRequestError(bad, f"bad target server id {req.target_id}")
        if not req.target_control:
            raise MigrationRequestError(bad, "target_control (HOST:PORT) is required")
        service = req.service
        if not service:
            if self._service is None:
                raise MigrationRequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no service address: give it in the request or start the agent with --service",
                )
            host, port = self._service
            service = f"{host}:{port}"
        try:
            parse_host_port(service, "service")
            parse_host_port(req.target_control, "target_control")
            if req.target_data:
                parse_host_port(req.target_data, "target_data")
        except ConfigError as e:
            raise MigrationRequestError(bad, str(e)) from None
        batch = req.batch_keys or DEFAULT_BATCH
        parallel = req.parallel_slots or DEFAULT_PARALLEL
        if not 1 <= batch <= MAX_BATCH:
            raise MigrationRequestError(bad, f"batch_keys must be 1..{MAX_BATCH}")
        if not 1 <= parallel <= MAX_PARALLEL:
            raise MigrationRequestError(bad, f"parallel_slots must be 1..{MAX_PARALLEL}")
        source_control = req.source_control or self.control_address
        if not source_control or source_control.startswith(("0.0.0.0:", "[::]:")):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the target must reach this agent's control service: give source_control "
                f"(this agent's control service is bound to {source_control or 'nothing'})",
            )
        return MigrationRecord(
            migration_id=req.migration_id,
            target_id=req.target_id,
            target_control=req.target_control,
            target_data=req.target_data,
            service=service,
            slots=to_ranges(slots),
            batch_keys=batch,
            rate_keys_per_second=req.rate_keys_per_second,
            parallel_slots=parallel,
            source_control=source_control,
        )

    async def _target_slots(self, mrec: MigrationRecord) -> tuple[Any, set[int]]:
        """Ask the target who it is, what it owns and has in flight (GetSlotsResponse, owned
        slots); refuse a target that is not the one named."""
        try:
            reply = await self._peers.stub(mrec.target_control).GetSlots(
                control_pb2.GetSlotsRequest(), timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"the target's control service {mrec.target_control} does not answer: "
                f"{e.code().name}: {e.details()}",
            ) from None
        info = reply.agent
        if info.server_id != mrec.target_id or info.keyspace != self._keyspace:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{mrec.target_control} is server {info.server_id} of keyspace {info.keyspace}, "
                f"not server {mrec.target_id} of keyspace {self._keyspace}",
            )
        if mrec.target_data and not _same_address(mrec.target_data, info.listen):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"server {info.server_id} serves UDP at {info.listen}, not {mrec.target_data}",
            )
        owned = {s for r in reply.owned for s in range(r.start, r.end + 1)}
        return reply, owned

    def _classify(
        self, mrec: MigrationRecord, target_owned: set[int]
    ) -> tuple[list[int], set[int], dict[int, str]]:
        move: list[int] = []
        skipped: set[int] = set()
        refused: dict[int, str] = {}
        busy = {
            s
            for m in self._migrations.values()
            if m.running or m.record.state in _ACTIVE_STATES
            for s, run in m.slots.items()
            if run.phase not in _FINISHED_PHASES
        }
        for slot in mrec.slot_set():
            state = self._table.state(slot)
            mine = state in OWNER_STATES
            if slot in target_owned:
                if mine:
                    refused[slot] = "both agents own it"
                else:
                    skipped.add(slot)
            elif not mine:
                refused[slot] = f"not owned here ({state.name}) nor by the target"
            elif slot in busy or slot in self._records:
                other = self._records[slot].migration_id if slot in self._records else "?"
                refused[slot] = f"in flight in migration {other} (resume that one)"
            else:
                move.append(slot)
        return move, skipped, refused

    async def _count_keys(self, slots: list[int]) -> int:
        total = 0
        for i in range(0, len(slots), 1024):
            pipe = self._admin.pipeline(transaction=False)
            for s in slots[i : i + 1024]:
                pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)
            total += sum(int(n) for n in await pipe.execute())
        return total

    def get(self, migration_id: str) -> Migration:
        m = self._migrations.get(migration_id)
        if m is None:
            raise MigrationRequestError(grpc.StatusCode.NOT_FOUND, f"no migration {migration_id!r}")
        return m

    def all(self) -> list[Migration]:
        return sorted(self._migrations.values(), key=lambda m: m.record.started)

    async def abort(self, migration_id: str) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        if m.record.state in ("DONE", "FINALIZED", "ABORTED") and not m.running:
            return self.status(m, changed=False)
        m.abort = True
        m.record.state = "ABORTING"
        await self._store.persist(migration=m.record)
        if not m.running:
            self._launch(m)  # finishes the slots in flight, starts none
        return self.status(m, changed=True)

    async def resume(self, migration_id: str) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        unfinished = any(run.phase not in _FINISHED_PHASES for run in m.slots.values())
        if m.running and not m.abort:
            return self.status(m, changed=False)
        if not unfinished:
            return self.status(m, changed=False)
        if m.running:  # aborting: let it end, then run again without the abort
            m.abort = False
            await asyncio.wait({m.task})  # type: ignore[arg-type]
        m.abort = False
        m.record.state = "RUNNING"
        m.record.error = ""
        m.record.finished = 0.0
        await self._store.persist(migration=m.record)
        self._launch(m)
        return self.status(m, changed=True)

    async def set_rate(self, migration_id: str, rate: int) -> control_pb2.MigrationStatus:
        m = self.get(migration_id)
        if m.record.rate_keys_per_second == rate:
            return self.status(m, changed=False)
        m.record.rate_keys_per_second = rate
        await self._store.persist(migration=m.record)
        if m.limiter is not None:
            m.limiter.set_rate(rate)
        log.info("migration %s: rate limit now %s", migration_id, rate or "none")
        return self.status(m, changed=True)

    # -- running a migration -------------------------------------------------------------

    def _launch(self, m: Migration) -> None:
        m.limiter = RateLimiter(m.record.rate_keys_per_second)
        m.task = asyncio.create_task(self._run(m), name=f"migration-{m.record.migration_id}")

    async def _run(self, m: Migration) -> None:
        rec = m.record
        todo = [s for s, run in sorted(m.slots.items()) if run.phase not in _FINISHED_PHASES]
        # Slots in flight (after a restart, a failure or an abort) continue one at a time
        # from their persisted phase; the others move in waves.
        in_flight = [s for s in todo if s in self._records]
        fresh = [s for s in todo if s not in self._records]
        self._dedup.watch(todo)
        permits = asyncio.Semaphore(rec.parallel_slots)
        tasks: list[asyncio.Task[None]] = []

        def launch(coro: Any, slots: int) -> None:
            def release(_: asyncio.Task[None]) -> None:
                for _ in range(slots):
                    permits.release()

            task = asyncio.create_task(coro)
            task.add_done_callback(release)
            tasks.append(task)

        try:
            for slot in in_flight:
                await permits.acquire()
                launch(self._slot(m, slot), 1)
            for i in range(0, len(fresh), _COUNT_CHUNK):
                if m.abort:
                    break
                chunk = fresh[i : i + _COUNT_CHUNK]
                counts = await self._counts(chunk)
                keys_of = dict(zip(chunk, counts, strict=True))
                for wave in _waves(chunk, counts, rec.parallel_slots):
                    for _ in wave:
                        await permits.acquire()
                    if m.abort:  # a wave already started finishes; no new one starts
                        for _ in wave:
                            permits.release()
                        break
                    estimate = sum(min(keys_of[s], WAVE_KEYS) for s in wave)
                    launch(self._wave(m, wave, estimate), len(wave))
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            raise
        finally:
            self._dedup.unwatch(todo)
        phases = [run.phase for run in m.slots.values()]
        if "failed" in phases:
            rec.state = "FAILED"
            rec.error = "; ".join(m.failures[-3:])
        elif all(p in _FINISHED_PHASES for p in phases):
            rec.state = "DONE"
        else:
            rec.state = "ABORTED"
        rec.finished = time.time()
        await self._store.persist(migration=rec)
        log.info("migration %s: %s", rec.migration_id, rec.state)

    async def _counts(self, slots: list[int]) -> list[int]:
        """Keys per slot now (before the freeze: an estimate to size the waves by)."""
        try:
            replies = await self._redis_calls(
                [resp_command(b"CLUSTER", b"COUNTKEYSINSLOT", s) for s in slots]
            )
        except (StepFailed, OSError) as e:
            log.warning("counting keys failed (%s): every slot goes alone", e)
            return [WAVE_KEYS] * len(slots)
        return [int(n) for n in replies]

    async def _wave(self, m: Migration, slots: list[int], estimate: int = 0) -> None:
        """Move several slots together, each step once for all of them: one persisted change
        per phase, the STARTs and COMPLETEs back to back, one request-id transfer, one copy
        stream. A slot whose step fails leaves the wave at once and goes on alone (``_slot``)
        from its persisted phase, as does the rest of the wave when a shared step fails:
        every step is idempotent."""
        mrec = m.record
        alone: list[asyncio.Task[None]] = []

        def leave(live: list[int], failed: dict[int, str]) -> list[int]:
            """The slots that stay in the wave; the failed ones go on alone right away (a
            slot the target entered holds its clients' writes until the ids arrive)."""
            if not failed:
                return live
            log.warning(
                "%d slots of the wave %d..%d go on alone: %s",
                len(failed),
                slots[0],
                slots[-1],
                next(iter(failed.values())),
            )
            for s, why in sorted(failed.items()):
                m.slots[s].attempts += 1
                m.slots[s].error = why
                alone.append(asyncio.create_task(self._slot(m, s)))
            return [s for s in live if s not in failed]

        live = list(slots)
        try:
            assert m.limiter is not None
            # Paid up front (one token per slot, one per key counted before the freeze, up to
            # one second's worth): the wave then runs unthrottled, so its slots stay frozen
            # briefly; only keys beyond what was paid wait inside the copy.
            rate = m.limiter.rate
            upfront = len(slots) + estimate
            if rate > 0:
                upfront = min(upfront, rate)
            await m.limiter.take(upfront)
            key_tokens = max(upfront - len(slots), 0)
            now = time.time()
            for s in live:
                m.slots[s].phase, m.slots[s].started, m.slots[s].error = "starting", now, ""
            await self._save_many(
                [
                    SlotRecord(s, "out", mrec.target_id, "starting", mrec.migration_id, now)
                    for s in live
                ],
                SlotState.MIGRATING_OUT,
            )
            live = leave(live, await self._transitions(mrec, live, Op.SLOT_START))
            frozen = await asyncio.gather(*(self._frozen(s) for s in live))
            lost = "the Redis connection dropped at the freeze"
            live = leave(live, {s: lost for s, ok in zip(live, frozen, strict=True) if not ok})
            now = time.time()
            await self._save_many(
                [self._records[s].evolve(phase="copying", frozen=now) for s in live]
            )
            for s in live:
                m.slots[s].phase, m.slots[s].frozen = "copying", now
            await self._send_ids_many(mrec, live)
            await self._copy_wave(m, live, prepaid=key_tokens)
            await self._save_many(
                [
                    self._records[s].evolve(
                        phase="completing",
                        keys_copied=m.slots[s].keys_copied,
                        keys_total=m.slots[s].keys_total,
                        attempts=m.slots[s].attempts,
                    )
                    for s in live
                ]
            )
            for s in live:
                m.slots[s].phase = "completing"
            live = leave(live, await self._transitions(mrec, live, Op.SLOT_COMPLETE))
            now = time.time()
            await self._save_many(
                [self._records[s].evolve(phase="done", finished=now) for s in live],
                SlotState.MOVED,
            )
            for s in live:
                self._barriers.pop(s, None)
                m.slots[s].phase, m.slots[s].finished = "done", now
        except asyncio.CancelledError:
            for t in alone:
                t.cancel()
            raise
        except Exception as e:
            if not isinstance(e, StepFailed | grpc.aio.AioRpcError | ConnectionError):
                log.exception("wave of slots %d..%d: unexpected error", slots[0], slots[-1])
            leave(live, dict.fromkeys(live, _describe(e)))
        try:
            await asyncio.gather(*alone)
        except asyncio.CancelledError:
            for t in alone:
                t.cancel()
            raise

    async def _frozen(self, slot: int) -> bool:
        """True once every request before the slot's freeze was applied."""
        barrier = self._barriers.get(slot)
        return barrier is not None and await barrier

    async def _slot(self, m: Migration, slot: int) -> None:
        run = m.slots[slot]
        first_failure = 0.0
        delay = 0.05
        run.error = ""
        while True:
            try:
                await self._slot_steps(m, slot, run)
                run.error = ""
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every step is idempotent: go again from the persisted phase
                if not isinstance(e, StepFailed | grpc.aio.AioRpcError | ConnectionError):
                    log.exception("slot %d: unexpected error", slot)
                run.attempts += 1
                run.error = _describe(e)
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > self.slot_retry_seconds:
                    log.error("slot %d: giving up for now: %s", slot, run.error)
                    run.phase = "failed"
                    m.failures.append(f"slot {slot}: {run.error}")
                    return
                log.warning("slot %d: %s; retrying", slot, run.error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _slot_steps(self, m: Migration, slot: int, run: SlotRun) -> None:
        mrec = m.record
        rec = self._records.get(slot)
        if rec is None:
            rec = SlotRecord(
                slot, "out", mrec.target_id, "starting", mrec.migration_id, time.time()
            )
            await self._save(rec, state=SlotState.MIGRATING_OUT)
        run.started = rec.started
        if rec.phase in ("starting", "copying"):
            run.phase = "starting"
            await self._transition(mrec, slot, Op.SLOT_START)
            if not await self._frozen(slot):
                raise StepFailed("the Redis connection dropped at the freeze; starting again")
            if rec.phase == "starting":
                rec = await self._save(rec.evolve(phase="copying", frozen=time.time()))
            run.phase, run.frozen = "copying", rec.frozen
            await self._send_ids(mrec, slot)
            await self._copy_wave(m, [slot], one_slot=True)
            rec = await self._save(
                rec.evolve(
                    phase="completing",
                    keys_copied=run.keys_copied,
                    keys_total=run.keys_total,
                    attempts=run.attempts,
                )
            )
        if rec.phase == "completing":
            run.phase = "completing"
            try:
                await self._transition(mrec, slot, Op.SLOT_COMPLETE)
            except StepFailed:
                # The switch may have flipped the slot and lost only the acknowledgement
                # path; the target itself knows whether it owns the slot now.
                if not await self._target_owns(mrec, slot):
                    raise
            rec = await self._save(
                rec.evolve(phase="done", finished=time.time()), state=SlotState.MOVED
            )
            self._barriers.pop(slot, None)
            run.phase, run.finished = "done", rec.finished

    async def _save(self, rec: SlotRecord, state: SlotState | None = None) -> SlotRecord:
        await self._save_many([rec], state)
        return rec

    async def _save_many(self, recs: list[SlotRecord], state: SlotState | None = None) -> None:
        """Persist ``recs`` (one write); only once that succeeded they become the slots'
        records (and the slots enter ``state``), so a failed write leaves memory and Redis
        agreeing."""
        if not recs:
            return

        def apply() -> None:
            for rec in recs:
                self._records[rec.slot] = rec
            if state is not None:
                self._table.set_state([rec.slot for rec in recs], state)

        owned = None
        if state is not None:
            owned = dict.fromkeys((rec.slot for rec in recs), state in OWNER_STATES)
        await self._store.persist(slots={rec.slot: rec for rec in recs}, owned=owned, then=apply)

    async def _transition(self, mrec: MigrationRecord, slot: int, op: Op) -> None:
        """Send SLOT_START / SLOT_COMPLETE through the switch until the target acknowledges."""
        failed = await self._transitions(mrec, [slot], op)
        if failed:
            raise StepFailed(failed[slot])

    async def _transitions(self, mrec: MigrationRecord, slots: list[int], op: Op) -> dict[int, str]:
        """SLOT_START / SLOT_COMPLETE of every slot, back to back, resent (those not
        acknowledged yet) until the target acknowledges; the slots that failed, with why."""
        if not slots:
            return {}
        host, port = parse_host_port(mrec.service, "service")
        loop = asyncio.get_running_loop()
        datagrams: dict[int, bytes] = {}
        waiters: dict[int, asyncio.Future[tuple[int, str]]] = {}
        for slot in slots:
            request_id = self._client_id << 32 | (next(self._counter) & 0xFFFFFFFF)
            datagrams[slot] = encode(
                Header(
                    op=int(op),
                    request_id=request_id,
                    keyspace=self._keyspace,
                    slot=slot,
                    source_id=self._server_id,
                    target_id=mrec.target_id,
                ),
                Control(),
            )
            waiters[slot] = self._acks[(int(op), slot)] = loop.create_future()
        failed: dict[int, str] = {}
        waiting = list(slots)
        timeout = TRANSITION_TIMEOUT
        try:
            for _ in range(TRANSITION_ATTEMPTS):
                for slot in waiting:
                    self.counters["source_transitions_sent"] += 1
                    self._dp.send_to(datagrams[slot], (host, port))
                await asyncio.wait([waiters[s] for s in waiting], timeout=timeout)
                still = []
                for slot in waiting:
                    waiter = waiters[slot]
                    if not waiter.done():
                        still.append(slot)
                        continue
                    status, message = waiter.result()
                    if status != Status.OK:
                        failed[slot] = (
                            f"server {mrec.target_id} refused {op.name}: "
                            f"{Status(status).name}: {message}"
                        )
                waiting = still
                if not waiting:
                    break
                timeout = min(timeout * 2, TRANSITION_MAX_TIMEOUT)
        finally:
            for slot, waiter in waiters.items():
                if self._acks.get((int(op), slot)) is waiter:
                    del self._acks[(int(op), slot)]
        for slot in waiting:
            failed[slot] = (
                f"no acknowledgement of {op.name} for slot {slot} from server {mrec.target_id} "
                f"via {mrec.service} after {TRANSITION_ATTEMPTS} attempts"
            )
        return failed

    async def _target_owns(self, mrec: MigrationRecord, slot: int) -> bool:
        try:
            _, owned = await self._target_slots(mrec)
        except MigrationRequestError:
            return False
        return slot in owned

    def _id_entries(self, slot: int) -> list[control_pb2.RequestIdEntry]:
        return [
            control_pb2.RequestIdEntry(
                request_id=e.request_id, reply=e.reply, fingerprint=e.fingerprint or b""
            )
            for e in self._dedup.entries_of(slot)
            if e.reply is not None and (e.reply[1] & ~REPLY_BIT) in _WRITE_OPS
        ]

    async def _send_ids(self, mrec: MigrationRecord, slot: int) -> None:
        await self._peers.stub(mrec.target_control).TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                slot=slot,
                source_id=self._server_id,
                entries=self._id_entries(slot),
                source_control=mrec.source_control or self.control_address,
            ),
            timeout=RPC_TIMEOUT,
        )

    async def _send_ids_many(self, mrec: MigrationRecord, slots: list[int]) -> None:
        """The request ids of every slot of a wave, in one call."""
        if not slots:
            return
        per_slot = [control_pb2.SlotRequestIds(slot=s, entries=self._id_entries(s)) for s in slots]
        reply = await self._peers.stub(mrec.target_control).TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                # The first slot in the one-slot fields too (see control.proto).
                slot=per_slot[0].slot,
                entries=per_slot[0].entries,
                source_id=self._server_id,
                source_control=mrec.source_control or self.control_address,
                slots=per_slot,
            ),
            timeout=RPC_TIMEOUT,
        )
        if sorted(reply.slots) != sorted(slots):
            raise StepFailed(
                f"server {mrec.target_id} did not take the request ids of several slots at once "
                "(an older agent?)"
            )

    async def _list(self, slots: list[int]) -> list[list[bytes]]:
        """The (non-reserved) keys of each slot, in pipelined round trips on the raw
        connection: ``COUNTKEYSINSLOT``, then ``GETKEYSINSLOT`` asking for more than counted,
        again (asking for twice as many) for any slot whose answer came back full.

        The slots are frozen (or moved), so no client key is added to them. Reserved keys
        are: the reserved slot is a slot of the keyspace too, and every write adds a
        request-id record to it (D16). Listing exactly the count would then leave out as
        many client keys as records were added since, and those keys would not be copied.
        """
        counts = [
            int(n)
            for n in await self._redis_calls(
                [resp_command(b"CLUSTER", b"COUNTKEYSINSLOT", s) for s in slots]
            )
        ]
        want = {s: n + _LIST_MARGIN for s, n in zip(slots, counts, strict=True) if n}
        listed: dict[int, list[bytes]] = {}
        while want:
            replies = await self._redis_calls(
                [resp_command(b"CLUSTER", b"GETKEYSINSLOT", s, n) for s, n in want.items()]
            )
            again: dict[int, int] = {}
            for (s, n), keys in zip(want.items(), replies, strict=True):
                if len(keys) >= n:
                    again[s] = 2 * n
                else:
                    listed[s] = [k for k in keys if not is_reserved(k)]
            want = again
        return [listed.get(s, []) for s in slots]

    async def _dump_connection(self) -> RespConnection:
        """A raw RESP connection of its own for DUMP / PTTL and key listing (hiredis, no
        per-command objects: the copy's per-key cost at the source), opened on first use and
        after a drop."""
        conn = self._copy_redis
        if conn is None or not conn.is_open:
            if self._redis_target is None:
                raise StepFailed("no Redis target to copy from")
            conn = self._copy_redis = await RespConnection.open(
                self._redis_target, name="netmigrate-agent-copy"
            )
        return conn

    async def _redis_calls(self, commands: list[bytes]) -> list[Any]:
        """Commands on the raw connection, pipelined; their replies (an error raises)."""
        return await self._redis_send(b"".join(commands), len(commands))

    async def _redis_send(self, payload: bytes, n: int) -> list[Any]:
        """``n`` commands in ``payload`` on the raw connection; their replies."""
        if not n:
            return []
        conn = await self._dump_connection()
        replies = await conn.calls(payload, n)
        for reply in replies:
            if isinstance(reply, Exception):
                raise StepFailed(f"Redis: {reply}")
        return replies

    async def dump(self, keys: Iterable[bytes]) -> list[control_pb2.KeyDump]:
        keys = list(keys)
        if not keys:
            return []
        try:
            replies = await self._redis_send(
                b"".join([_DUMP_PTTL % (len(k), k, len(k), k) for k in keys]), 2 * len(keys)
            )
        except StepFailed as e:
            raise StepFailed(f"DUMP / PTTL failed: {e}") from None
        out = []
        for i, k in enumerate(keys):
            payload, pttl = replies[2 * i], replies[2 * i + 1]
            if payload is None or pttl == -2:
                out.append(control_pb2.KeyDump(key=k, present=False))
            else:
                out.append(
                    control_pb2.KeyDump(key=k, dump=payload, pttl=ttl_from_pttl(pttl), present=True)
                )
        return out

    async def _copy_wave(
        self, m: Migration, slots: list[int], prepaid: int | None = None, one_slot: bool = False
    ) -> None:
        """The copy of a wave: one stream, batches of ``batch_keys`` keys that may span
        slots (``CopyBatch.parts``), up to COPY_WINDOW batches unacknowledged. ``prepaid``
        keys' worth of the rate limit was paid before the freeze; only keys beyond it wait.
        ``one_slot``: a slot on its own, in batches of the single-slot form (``CopyBatch.slot``
        and ``keys``), which every target takes (the path a wave falls back to)."""
        if not slots:
            return
        listed = await self._list(slots)
        items: list[tuple[int, bytes]] = []
        for slot, keys in zip(slots, listed, strict=True):
            run = m.slots[slot]
            run.keys_total, run.keys_copied = len(keys), 0
            items += [(slot, k) for k in keys]
        assert m.limiter is not None
        covered = prepaid or 0
        if not items:
            return  # empty slots: no stream
        batch = m.record.batch_keys
        call = self._peers.stub(m.record.target_control).Copy()
        #: seq -> [(slot, keys of it in the batch)]
        outstanding: deque[tuple[int, list[tuple[int, int]]]] = deque()

        async def read_ack() -> None:
            ack = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
            if ack is grpc.aio.EOF:
                raise StepFailed(f"the target closed the copy stream of slots {slots[0]}..")
            seq, counts = outstanding.popleft()
            if ack.seq != seq or (one_slot and ack.slot != slots[0]):
                raise StepFailed(
                    f"copy of slots {slots[0]}..: acknowledgement {ack.seq}, expected {seq}"
                )
            for slot, n in counts:
                m.slots[slot].keys_copied += n
                m.keys_copied += n
                self.counters["source_keys_copied"] += n

        try:
            for seq, i in enumerate(range(0, len(items), batch), start=1):
                chunk = items[i : i + batch]
                paid = min(covered, len(chunk))
                covered -= paid
                if len(chunk) > paid:
                    await m.limiter.take(len(chunk) - paid)
                dumps = await self.dump(k for _, k in chunk)
                counts: list[tuple[int, int]] = []
                if one_slot:
                    counts.append((slots[0], len(chunk)))
                    message = control_pb2.CopyBatch(
                        slot=slots[0], source_id=self._server_id, seq=seq, keys=dumps
                    )
                else:
                    parts: list[control_pb2.CopyPart] = []
                    j = 0
                    for slot, group in itertools.groupby(chunk, key=lambda item: item[0]):
                        n = sum(1 for _ in group)
                        parts.append(control_pb2.CopyPart(slot=slot, keys=dumps[j : j + n]))
                        counts.append((slot, n))
                        j += n
                    message = control_pb2.CopyBatch(source_id=self._server_id, seq=seq, parts=parts)
                await call.write(message)
                self.counters["source_batches"] += 1
                outstanding.append((seq, counts))
                while len(outstanding) >= COPY_WINDOW:
                    await read_ack()
            await call.done_writing()
            while outstanding:
                await read_ack()
        finally:
            call.cancel()

    # -- served to the target ------------------------------------------------------------

    async def pull(self, req: control_pb2.PullRequest) -> list[control_pb2.KeyDump]:
        rec = self._records.get(req.slot)
        state = self._table.state(req.slot)
        if (
            rec is None
            or rec.peer != req.target_id
            or state not in (SlotState.FROZEN, SlotState.MOVED)
        ):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"slot {req.slot} is not frozen here for server {req.target_id} ({state.name})",
            )
        barrier = self._barriers.get(req.slot)
        if barrier is not None and not await barrier:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, "the freeze is not complete")
        for k in req.keys:
            if is_reserved(k):
                raise MigrationRequestError(grpc.StatusCode.INVALID_ARGUMENT, "reserved key")
        self.counters["source_pulls_served"] += 1
        try:
            return await self.dump(req.keys)
        except (StepFailed, OSError) as e:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None

    # -- finalize ------------------------------------------------------------------------

    async def finalize(self, migration_id: str, grace: float) -> tuple[Migration, int, int]:
        """Delete the moved keys here; (migration, keys deleted, slots finalized)."""
        m = self.get(migration_id)
        async with m.finalizing:  # a second call finds what the first one left: nothing
            return await self._finalize(m, grace)

    async def _finalize(self, m: Migration, grace: float) -> tuple[Migration, int, int]:
        migration_id = m.record.migration_id
        if m.running:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"migration {migration_id} is still {m.record.state}; finalize after it ends",
            )
        done = sorted(s for s, run in m.slots.items() if run.phase == "done")
        if not done:
            return m, 0, 0
        _, owned = await self._target_slots(m.record)
        missing = [s for s in done if s not in owned]
        if missing:
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"server {m.record.target_id} does not own {len(missing)} moved slots "
                f"(first {missing[0]}): keys are kept",
            )
        latest = max(m.slots[s].finished for s in done)
        wait = latest + grace - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        deleted = 0
        for i in range(0, len(done), 256):  # slots per round trip and per persisted change
            chunk = done[i : i + 256]
            try:
                unlinks = [  # one per slot and 1000 keys: UNLINK is single-slot in cluster mode
                    resp_command(b"UNLINK", *keys[j : j + 1000])
                    for keys in await self._list(chunk)
                    for j in range(0, len(keys), 1000)
                ]
                deleted += sum(int(n) for n in await self._redis_calls(unlinks))
            except (StepFailed, OSError) as e:
                raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
            records = {slot: self._records[slot].evolve(phase="finalized") for slot in chunk}

            def gone(chunk: list[int] = chunk) -> None:
                self._table.set_state(chunk, SlotState.NOT_OWNED)
                for slot in chunk:
                    self._records.pop(slot, None)
                    m.slots[slot].phase = "finalized"

            await self._store.persist(slots=records, then=gone)  # type: ignore[arg-type]
        self.counters["source_keys_finalized"] += deleted
        if m.record.state == "DONE" and all(
            run.phase in ("finalized", "skipped") for run in m.slots.values()
        ):
            m.record.state = "FINALIZED"
            await self._store.persist(migration=m.record)
        return m, deleted, len(done)

    # -- status --------------------------------------------------------------------------

    def status(
        self, m: Migration, *, changed: bool = False, include_slots: bool = False
    ) -> control_pb2.MigrationStatus:
        rec = m.record
        # Polled while the migration runs: one pass to count, details only for what is shown.
        counts = dict.fromkeys(PHASE_NAMES, 0)
        counts.update(Counter(run.phase for run in m.slots.values()))
        shown = (
            m.slots.items()
            if include_slots
            else [(s, run) for s, run in m.slots.items() if run.phase in _SHOWN_PHASES]
        )
        slots = []
        for slot, run in sorted(shown, key=lambda item: item[0]):
            slots.append(
                control_pb2.SlotStatus(
                    slot=slot,
                    phase=PHASE_NAMES[run.phase],
                    keys_copied=run.keys_copied,
                    keys_total=run.keys_total,
                    started=run.started,
                    frozen=run.frozen,
                    finished=run.finished,
                    attempts=run.attempts,
                    error=run.error,
                )
            )
        in_flight = counts["starting"] + counts["copying"] + counts["completing"]
        return control_pb2.MigrationStatus(
            migration_id=rec.migration_id,
            state=rec.state,
            source_id=self._server_id,
            target_id=rec.target_id,
            target_control=rec.target_control,
            slots_total=len(m.slots),
            slots_pending=counts["pending"],
            slots_in_flight=in_flight,
            slots_done=counts["done"] + counts["finalized"],
            slots_skipped=counts["skipped"],
            slots_failed=counts["failed"],
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


def _waves(slots: list[int], counts: list[int], limit: int) -> list[list[int]]:
    """Consecutive slots grouped into waves of at most ``limit`` slots and WAVE_KEYS keys (a
    slot with more keys goes alone)."""
    waves: list[list[int]] = []
    wave: list[int] = []
    keys = 0
    for slot, n in zip(slots, counts, strict=True):
        if wave and (len(wave) >= limit or keys + n > WAVE_KEYS):
            waves.append(wave)
            wave, keys = [], 0
        wave.append(slot)
        keys += n
    if wave:
        waves.append(wave)
    return waves


def _on_barrier(reply: Any, barrier: asyncio.Future[bool]) -> None:
    if not barrier.done():
        barrier.set_result(not isinstance(reply, ConnectionError))


def _same_address(a: str, b: str) -> bool:
    try:
        return parse_host_port(a, "address") == parse_host_port(b, "address")
    except ConfigError:
        return False


def _describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__
