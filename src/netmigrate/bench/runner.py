"""Load phase, run phase with a migration in the middle, and the verification sweep.

One :func:`run_system` call benchmarks one system on one workload:

1. ``setup`` the system (fresh servers), check the slots to move belong to the source;
2. **load**: ``records`` keys through the system's own client, batched (``set_many``);
3. **run**: ``concurrency`` closed-loop asyncio workers (or paced to ``rate`` ops/s in total,
   latency then measured from each operation's *intended* start so queueing is not hidden);
   the migration starts ``migrate_at`` seconds in; the run lasts ``duration`` seconds, or
   longer so that at least ``min_after`` seconds follow the end of the migration;
4. **verify**: every key is read back through a fresh client, and the run's recorded history
   (every operation's invocation, completion and value token) with that final state is judged
   by the project's one history checker, :class:`~netmigrate.bench.history.History` (no lost
   write, no stale read, no value nobody wrote); the moved slots must be owned by the target
   (the others unchanged).

Phases "before", "during" and "after" follow the system's ``observer.started()`` and
``observer.finished()`` calls. All workers share one client, as the threads of an
application share one connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from netmigrate.bench import cpu, loadprocs
from netmigrate.bench.history import MIN_VALUE_SIZE, History, ValueFactory
from netmigrate.bench.kv import REDIRECT_KINDS, KVClient, NullEvents, error_kind
from netmigrate.bench.loadprocs import LoadProcesses
from netmigrate.bench.progress import Progress, Status
from netmigrate.bench.report import ratios
from netmigrate.bench.system import SetupPlan, System
from netmigrate.bench.timeline import AFTER, DURING, PHASES, Recorder, stalls
from netmigrate.bench.ycsb import INSERT, READ, RMW, KeyNames, OperationStream, workload
from netmigrate.protocol.constants import SLOT_COUNT

#: Pause after a failed operation so a dead server does not turn the workers into a busy loop.
ERROR_BACKOFF_S = 0.001
#: Writer ids of the history's unique values: the load phase (sequence = key number) and the
#: run phase (one sequence for all workers).
LOAD_WRITER, RUN_WRITER = 0, 1
#: Keys per read of the verification sweep.
SWEEP_BATCH = 1000


@dataclass
class RunConfig:
    workload: str = "B"
    records: int = 10_000
    value_size: int = 100
    concurrency: int = 16
    duration_s: float = 30.0
    #: Seconds into the run phase at which the migration starts (default: a third in).
    migrate_at_s: float | None = None
    #: Seconds of "after" phase the run keeps at least (default: max(1, duration / 6)).
    min_after_s: float | None = None
    migrate_fraction: float = 0.5
    #: Total target rate in ops/s (None: closed loop, as fast as the system answers).
    rate: float | None = None
    #: Load-generator processes of the run phase, in the system's ``client`` budget
    #: (:mod:`netmigrate.bench.loadprocs`); 1: the workers run in the harness process.
    client_processes: int = 1
    seed: int = 1
    bin_ms: int = 100
    load_batch: int = 500
    migration_timeout_s: float = 900.0
    verify: bool = True
    #: System-specific knobs, e.g. {"masters": 2}.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def migrate_at(self) -> float:
        return self.duration_s / 3 if self.migrate_at_s is None else self.migrate_at_s

    @property
    def min_after(self) -> float:
        return max(1.0, self.duration_s / 6) if self.min_after_s is None else self.min_after_s

    def slots(self) -> tuple[int, ...]:
        """The slots to migrate: the lowest ``fraction * 16384`` (what ``redis-cli`` moves)."""
        return tuple(range(round(self.migrate_fraction * SLOT_COUNT)))

    def validate(self) -> None:
        workload(self.workload)
        problems = []
        if self.records < 2:
            problems.append(f"records must be >= 2 (got {self.records})")
        if self.concurrency < 1:
            problems.append(f"concurrency must be >= 1 (got {self.concurrency})")
        if self.duration_s <= 0:
            problems.append(f"duration must be > 0 s (got {self.duration_s})")
        if not 0 < self.migrate_fraction <= 1:
            problems.append(f"migrate fraction must be in (0, 1] (got {self.migrate_fraction})")
        elif round(self.migrate_fraction * SLOT_COUNT) < 1:
            problems.append("migrate fraction is too small to move a single slot")
        if not 0 <= self.migrate_at < self.duration_s:
            problems.append(
                f"migration start {self.migrate_at} s must lie within the run ({self.duration_s} s)"
            )
        if self.min_after < 0:
            problems.append(f"minimum after-phase must be >= 0 s (got {self.min_after})")
        if self.client_processes < 1:
            problems.append(f"client processes must be >= 1 (got {self.client_processes})")
        if self.rate is not None and self.rate <= 0:
            problems.append(f"rate must be > 0 ops/s (got {self.rate})")
        if self.bin_ms < 1:
            problems.append(f"bin width must be >= 1 ms (got {self.bin_ms})")
        if self.load_batch < 1:
            problems.append(f"load batch must be >= 1 (got {self.load_batch})")
        if self.value_size < MIN_VALUE_SIZE:
            problems.append(f"value size must be >= {MIN_VALUE_SIZE} bytes (got {self.value_size})")
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["migrate_at_s"] = self.migrate_at
        d["min_after_s"] = self.min_after
        d["slots_to_migrate"] = len(self.slots())
        return d


class _Observer:
    """The runner's :class:`~netmigrate.bench.system.MigrationObserver`."""

    def __init__(
        self,
        rec: Recorder,
        mark: Callable[[str], None] | None = None,
        forward: Callable[[int, int], None] | None = None,
    ) -> None:
        self.rec = rec
        #: Called with the boundary's name when a phase changes (CPU readings).
        self.mark = mark or (lambda _name: None)
        #: Called with (phase, time) when a phase changes (the load-generator processes).
        self.forward = forward or (lambda _phase, _t: None)
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.samples: list[tuple[int, int, int, str]] = []
        self.last: tuple[int, int, str] | None = None

    def started(self) -> None:
        if self.start_ns is None:
            self.start_ns = self.rec.now()
            self.rec.set_phase(DURING, self.start_ns)
            self.forward(DURING, self.start_ns)
            self.mark(cpu.MIGRATION_STARTED)

    def progress(self, done: int, total: int, unit: str) -> None:
        self.last = (done, total, unit)
        self.samples.append((self.rec.now(), done, total, unit))

    def finished(self) -> None:
        if self.end_ns is None:
            self.started()
            self.end_ns = self.rec.now()
            self.rec.set_phase(AFTER, self.end_ns)
            self.forward(AFTER, self.end_ns)
            self.mark(cpu.MIGRATION_FINISHED)


@dataclass
class WorkerContext:
    """What the workers share (one per run phase)."""

    client: KVClient
    rec: Recorder
    stream: OperationStream
    names: KeyNames
    values: ValueFactory
    history: History
    concurrency: int
    rate: float | None
    stop: bool = False
    #: Last sequence number of a run-phase write.
    seq: int = 0
    #: Writer id of this context's run-phase values (one per load-generator process).
    writer: int = RUN_WRITER


async def worker(index: int, ctx: WorkerContext) -> None:
    client, rec, stream = ctx.client, ctx.rec, ctx.stream
    names, make_value = ctx.names, ctx.values.make
    invoke, complete = ctx.history.invoke, ctx.history.complete
    writer = ctx.writer
    clock = rec.now
    interval_ns = int(ctx.concurrency * 1e9 / ctx.rate) if ctx.rate else 0
    next_ns = rec.t0_ns + (index * interval_ns) // ctx.concurrency
    while not ctx.stop:
        if interval_ns:
            now = clock()
            if next_ns > now:
                await asyncio.sleep((next_ns - now) / 1e9)
                if ctx.stop:
                    return
            start = next_ns  # intended start: a late send counts as latency
            next_ns += interval_ns
        else:
            start = clock()
        op, keynum = stream.next()
        key = names(keynum)
        # An operation that raises stays unacknowledged in the history: outcome unknown.
        try:
            if op == READ:
                read = invoke("get", key)
                complete(read, await client.get(key))
            else:
                if op == RMW:
                    read = invoke("get", key)
                    complete(read, await client.get(key))
                ctx.seq += 1
                value = make_value(writer, ctx.seq)
                write = invoke("set", key, value)
                await client.set(key, value)
                complete(write)
                if op == INSERT:
                    stream.acknowledge_insert(keynum)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if op == INSERT:
                # YCSB acknowledges failed inserts too, so "latest" keeps moving.
                stream.acknowledge_insert(keynum)
            if not ctx.stop:
                rec.error(error_kind(exc))
            await asyncio.sleep(ERROR_BACKOFF_S)
            continue
        if not ctx.stop:
            rec.record(op, start, clock())


async def drive(ctx: WorkerContext, seconds: float) -> tuple[int, float]:
    """Run ``ctx.concurrency`` workers for ``seconds`` with no migration: (ops, wall seconds)."""
    ctx.rec.start()
    ctx.stop = False
    tasks = [asyncio.create_task(worker(i, ctx)) for i in range(ctx.concurrency)]
    try:
        await asyncio.sleep(seconds)
    finally:
        wall = (ctx.rec.now() - ctx.rec.t0_ns) / 1e9
        ctx.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return ctx.rec.ops_total, wall


async def load(
    client: KVClient, cfg: RunConfig, names: KeyNames, values: ValueFactory, history: History
) -> dict[str, Any]:
    """Insert keys 0..records-1 (sequence = key number), ``concurrency`` batches in flight;
    the history learns them as the initial state."""
    t = time.perf_counter()
    batches = iter(range(0, cfg.records, cfg.load_batch))

    async def loader() -> None:
        for first in batches:
            last = min(first + cfg.load_batch, cfg.records)
            items = [(names(k), values.make(LOAD_WRITER, k)) for k in range(first, last)]
            await client.set_many(items)
            history.initial.update(items)

    await asyncio.gather(*(loader() for _ in range(max(1, min(cfg.concurrency, 8)))))
    seconds = time.perf_counter() - t
    return {
        "records": cfg.records,
        "seconds": round(seconds, 3),
        "records_per_s": round(cfg.records / seconds, 1),
        "batch": cfg.load_batch,
    }


async def _verify(
    system: System,
    history: History,
    names: KeyNames,
    slots: tuple[int, ...],
    owners_before: dict[int, str],
) -> dict[str, Any]:
    t = time.perf_counter()
    client = await system.client(NullEvents())
    try:
        n = len(names)
        for first in range(0, n, SWEEP_BATCH):
            keys = [names(k) for k in range(first, min(n, first + SWEEP_BATCH))]
            history.final.update(zip(keys, await client.get_many(keys), strict=True))
    finally:
        await client.aclose()
    sweep_s = time.perf_counter() - t
    check = history.check()
    owners = await system.slot_owners()
    moving = set(slots)
    not_moved = [s for s in slots if owners.get(s) != system.target]
    changed = [
        s for s in range(SLOT_COUNT) if s not in moving and owners.get(s) != owners_before[s]
    ]
    return {
        "history": check.summary(),
        "keys_checked": len(history.final),
        "lost_writes": check.lost_writes,
        "stale_reads": check.stale_reads,
        "unknown_values": check.unknown_values,
        "slots_on_target": len(slots) - len(not_moved),
        "slots_expected": len(slots),
        "slots_not_moved": not_moved[:20],
        "other_slots_changed": changed[:20],
        "slots_ok": not not_moved and not changed,
        "ok": check.ok and not not_moved and not changed,
        "sweep_s": round(sweep_s, 3),
        "check_s": round(time.perf_counter() - t - sweep_s, 3),
        "seconds": round(time.perf_counter() - t, 3),
    }


def _counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(before) | set(after))
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)
    }


def _migration_text(obs: _Observer) -> str:
    if obs.last is None:
        return "running" if obs.start_ns else ""
    done, total, unit = obs.last
    pct = 100.0 * done / total if total else 100.0
    state = "done" if obs.end_ns else f"{pct:5.1f}%"
    return f"{state} ({done:,}/{total:,} {unit})"


async def run_phase(
    system: System,
    ctx: WorkerContext,
    cfg: RunConfig,
    slots: tuple[int, ...],
    progress: Progress,
    label: str,
    procs: LoadProcesses | None = None,
) -> dict[str, Any]:
    rec = ctx.rec
    readings: dict[str, dict[str, Any]] = {}

    def mark(name: str) -> None:
        try:
            usage = system.cpu_usage()
        except Exception as exc:  # a reading must never break the run; it is left out
            progress.log(f"[{label}] CPU reading at {name} failed: {exc}")
            return
        readings[name] = cpu.sample(usage, time.process_time(), time.time())

    obs = _Observer(rec, mark, None if procs is None else procs.phase)
    cpu0 = time.process_time()
    mark(cpu.START)
    rec.start()
    t0 = rec.t0_ns
    if procs is None:
        workers = [asyncio.create_task(worker(i, ctx)) for i in range(cfg.concurrency)]
        ops_so_far: Callable[[], int] = lambda: rec.ops_total  # noqa: E731
    else:
        workers = []
        procs.go(t0)
        ops_so_far = procs.ops_total
    load_problems: list[str] = []
    mig_task: asyncio.Task[Any] | None = None
    call_ns = return_ns = None
    result = None
    error: str | None = None

    async def migrate() -> Any:
        nonlocal call_ns, return_ns
        call_ns = rec.now()
        try:
            return await system.migrate(slots, obs)
        finally:
            return_ns = rec.now()

    last_ops, last_t = 0, rec.now()
    try:
        while True:
            await asyncio.sleep(0.2)
            now = rec.now()
            elapsed = (now - t0) / 1e9
            if mig_task is None and elapsed >= cfg.migrate_at:
                progress.log(f"[{label}] migration of {len(slots)} slots starts at {elapsed:.1f} s")
                mig_task = asyncio.create_task(migrate())
            if mig_task is not None and mig_task.done() and result is None and error is None:
                exc = mig_task.exception()
                if exc is not None:
                    error = f"{type(exc).__name__}: {exc}"
                    progress.log(f"[{label}] migration FAILED: {error}")
                    obs.finished()
                else:
                    result = mig_task.result()
                    obs.started()
                    obs.finished()
                    progress.log(
                        f"[{label}] migration done in {(obs.end_ns - obs.start_ns) / 1e9:.2f} s"
                    )
            ops_now = ops_so_far()
            ops_rate = (ops_now - last_ops) / max((now - last_t) / 1e9, 1e-9)
            last_ops, last_t = ops_now, now
            progress.status(
                Status(label, elapsed, PHASES[rec.phase], ops_rate, rec.errors_total,
                       rec.events_total, _migration_text(obs))
            )  # fmt: skip
            if mig_task is not None and mig_task.done():
                end_at = max(cfg.duration_s, (obs.end_ns - t0) / 1e9 + cfg.min_after)
                if elapsed >= end_at:
                    break
            elif (
                mig_task is not None
                and call_ns is not None
                and (now - call_ns) / 1e9 > cfg.migration_timeout_s
            ):
                mig_task.cancel()
                with contextlib.suppress(BaseException):
                    await mig_task
                error = f"migration did not finish within {cfg.migration_timeout_s} s"
                progress.log(f"[{label}] {error}")
                obs.finished()
                break
    finally:
        end_ns = rec.now()
        mark(cpu.END)
        ctx.stop = True
        if mig_task is not None and not mig_task.done():
            mig_task.cancel()
            with contextlib.suppress(BaseException):
                await mig_task
        if workers:
            _, pending = await asyncio.wait(workers, timeout=30)
            for w in pending:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        if procs is not None:
            load_problems = await procs.stop(rec, ctx.history)
            for problem in load_problems:
                progress.log(f"[{label}] {problem}")
        progress.close()

    start_ns = obs.start_ns if obs.start_ns is not None else call_ns
    stop_ns = obs.end_ns if obs.end_ns is not None else return_ns
    migration: dict[str, Any] = {
        "slots": len(slots),
        "slot_ranges": [[slots[0], slots[-1]]] if slots else [],
        "start_s": round((start_ns - t0) / 1e9, 4) if start_ns else None,
        "end_s": round((stop_ns - t0) / 1e9, 4) if stop_ns else None,
        "call_s": round((call_ns - t0) / 1e9, 4) if call_ns else None,
        "return_s": round((return_ns - t0) / 1e9, 4) if return_ns else None,
        "error": error,
    }
    if start_ns and stop_ns:
        duration = (stop_ns - start_ns) / 1e9
        migration["duration_s"] = round(duration, 4)
    if result is not None:
        migration["slots_moved"] = result.slots_moved
        migration["keys_moved"] = result.keys_moved
        migration["keys_per_s"] = (
            round(result.keys_moved / migration["duration_s"], 1)
            if migration.get("duration_s")
            else None
        )
        migration["details"] = result.details
    bin_ns = cfg.bin_ms * 1_000_000
    progress_points: list[list[Any]] = []
    last_bin = -1
    for i, (t, done_n, total, unit) in enumerate(obs.samples):
        b = (t - t0) // bin_ns
        if b != last_bin or i == len(obs.samples) - 1:
            progress_points.append([round((t - t0) / 1e9, 4), done_n, total, unit])
            last_bin = b
    timeline = rec.timeline(end_ns)
    timeline["migration_start_s"] = migration["start_s"]
    timeline["migration_end_s"] = migration["end_s"]
    timeline["migration_progress"] = progress_points
    stall = stalls(timeline, rec.gaps, t0)
    phases = rec.phase_summary(end_ns)
    wall = (end_ns - t0) / 1e9
    return {
        "load_generator": {"processes": 1, "role": None}
        if procs is None
        else {**procs.info(), "problems": load_problems},
        "seconds": round(wall, 3),
        # CPU of this process (the load generator) over the run phase, in % of one core.
        "harness_cpu_pct": round(100 * (time.process_time() - cpu0) / wall, 1),
        "phases": phases,
        "stalls": stall,
        "migration": migration,
        "timeline": timeline,
        "cpu": cpu.cpu_section(
            readings, system.cpu_budgets(), harness_host=getattr(system, "harness_cpu_host", None)
        ),
    }


def _totals(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    events: dict[str, int] = {}
    ops = 0
    for p in phases.values():
        ops += p["ops"]
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in p["client_events"].items():
            events[k] = events.get(k, 0) + v
    return {
        "ops": ops,
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "client_events": dict(sorted(events.items())),
        "redirections": sum(v for k, v in events.items() if k in REDIRECT_KINDS),
    }


async def _load_processes(
    system: System,
    cfg: RunConfig,
    spec: Any,
    expected_ops: int,
    progress: Progress,
    label: str,
) -> LoadProcesses | None:
    """The run phase's load-generator processes (None: the workers run in this process)."""
    if cfg.client_processes <= 1:
        return None
    recipe = system.client_recipe()
    if recipe is None or spec.insert > 0:
        why = "its clients live in the harness" if recipe is None else "the workload inserts"
        progress.log(f"[{label}] one load process: {why}")
        return None
    procs = LoadProcesses(
        system,
        recipe,
        loadprocs.plans(
            workload=cfg.workload, records=cfg.records, value_size=cfg.value_size,
            seed=cfg.seed, expected_ops=expected_ops, concurrency=cfg.concurrency,
            rate=cfg.rate, bin_ms=cfg.bin_ms, processes=cfg.client_processes,
            first_writer=RUN_WRITER + 1,
        ),
    )  # fmt: skip
    await procs.start()
    return procs


async def run_system(
    system: System, cfg: RunConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Benchmark one system on one workload; the run's report section (see report.py)."""
    cfg.validate()
    progress = progress or Progress(enabled=False)
    spec = workload(cfg.workload)
    slots = cfg.slots()
    system.validate_slots(slots)
    label = f"{spec.name} {system.name}"
    plan = SetupPlan(cfg.records, cfg.value_size, slots, dict(cfg.options))
    names = KeyNames()
    values = ValueFactory(cfg.value_size, cfg.seed)
    history = History()
    expected_ops = int(cfg.duration_s * (cfg.rate or 50_000))
    stream = OperationStream(spec, cfg.records, seed=cfg.seed, expected_ops=expected_ops)
    rec = Recorder(cfg.bin_ms)
    out: dict[str, Any] = {
        "system": system.name,
        "system_description": system.description,
        "workload": spec.name,
        "workload_mix": {
            "read": spec.read,
            "update": spec.update,
            "insert": spec.insert,
            "rmw": spec.rmw,
            "distribution": spec.distribution,
        },
        "config": cfg.as_dict(),
    }
    client: KVClient | None = None
    procs: LoadProcesses | None = None
    try:
        t = time.perf_counter()
        progress.log(f"[{label}] setting up")
        await system.setup(plan)
        out["setup_s"] = round(time.perf_counter() - t, 3)
        out["system_info"] = system.info()
        owners_before = await system.slot_owners()
        wrong = [s for s in slots if owners_before.get(s) != system.source]
        if wrong:
            raise RuntimeError(
                f"{len(wrong)} slots to migrate are not on the source, e.g. {wrong[0]}"
            )
        progress.log(f"[{label}] loading {cfg.records:,} records of {cfg.value_size} B")
        loader = await system.client(NullEvents())
        try:
            out["load"] = await load(loader, cfg, names, values, history)
        finally:
            await loader.aclose()
        out["keys_per_node_before"] = await system.keys_per_node()
        client = await system.client(rec)
        ctx = WorkerContext(client, rec, stream, names, values, history, cfg.concurrency, cfg.rate)
        procs = await _load_processes(system, cfg, spec, expected_ops, progress, label)
        counters_before = await system.server_counters()
        progress.log(
            f"[{label}] run phase: {cfg.concurrency} workers"
            + ("" if procs is None else f" in {len(procs.plans)} processes")
            + f", {cfg.duration_s:g} s"
        )
        run = await run_phase(system, ctx, cfg, slots, progress, label, procs)
        out["load_generator"] = run["load_generator"]
        if run["load_generator"].get("problems"):
            raise RuntimeError("; ".join(run["load_generator"]["problems"]))
        out["server_counters"] = _counter_delta(counters_before, await system.server_counters())
        out["run_s"] = run["seconds"]
        out["harness_cpu_pct"] = run["harness_cpu_pct"]
        out["phases"] = run["phases"]
        out["ratios"] = ratios(run["phases"])
        out["totals"] = _totals(run["phases"])
        out["migration"] = run["migration"]
        out["stalls"] = run["stalls"]
        out["cpu"] = run["cpu"]
        if cfg.verify:
            progress.log(
                f"[{label}] verifying {len(names):,} keys, {len(history.ops):,} operations"
            )
            out["verification"] = await _verify(system, history, names, slots, owners_before)
        out["keys_per_node_after"] = await system.keys_per_node()
        out["timeline"] = run["timeline"]
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
        if procs is not None:
            await procs.close()  # idempotent; after a failure before the run phase ended
        await system.teardown()
    return out
