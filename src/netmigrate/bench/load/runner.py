"""One load run: preload, closed-loop load until told to stop, quiescent final read, outputs.

Every operation is recorded in a :class:`~netmigrate.bench.history.History` (invocation and
completion on CLOCK_MONOTONIC, which ``time.monotonic`` reads on Linux, the same clock the
report uses to place the migration), so the run can be checked for lost writes, stale reads
and duplicates afterwards. Writes carry unique values
(:func:`~netmigrate.bench.history.unique_value`).
Data keys (GET/SET/DEL/MGET) and counter keys (INCRBY by 1) are disjoint sets, as the checker
models registers and counters apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netmigrate import gc_policy
from netmigrate.bench.history import History, unique_value
from netmigrate.bench.load import HISTORY_FILE, LOAD_FILE, READY_FILE
from netmigrate.bench.load.cpu_samples import CpuSampler
from netmigrate.bench.load.workload import OPS, Chooser, WorkloadConfig, data_key
from netmigrate.bench.timeline import Recorder
from netmigrate.client import DEFAULT_DEADLINE, AsyncClient, NetMigrateError, ServerError, Timeout

log = logging.getLogger(__name__)

#: Operation -> its index in the timeline's per-operation series.
OP_INDEX = {op: i for i, op in enumerate(OPS)}
_PRELOAD_BATCH = 2000


@dataclass(frozen=True, slots=True)
class LoadConfig:
    service: tuple[str, int]
    keyspace: int
    out: Path
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    preload: int = 0
    #: Write the preload straight into this Redis (URL) with pipelines instead of the client.
    preload_redis: str | None = None
    concurrency: int = 32
    duration: float = 10.0
    stop_file: Path | None = None
    timeout: float = 0.25
    #: A cap on resends (None: the deadline alone bounds them, the client's default).
    retries: int | None = None
    deadline: float = DEFAULT_DEADLINE
    #: Lab run directory whose CPU budgets are read during the run (None: none).
    cpu_run_dir: Path | None = None
    #: The keyspace's largest request (None: the client derives it from the route's MTU).
    max_datagram: int | None = None


def classify(exc: BaseException) -> tuple[bool, str]:
    """(retryable, kind) of a failed operation. A timeout is retryable: the request may be
    sent again with the same id (the agents apply it at most once)."""
    if isinstance(exc, Timeout):
        return True, "timeout"
    if isinstance(exc, ServerError):
        return exc.retryable, exc.status.name
    if isinstance(exc, NetMigrateError):
        return False, type(exc).__name__
    return False, type(exc).__name__


class LoadRun:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.history = History()
        self.timeline: Recorder | None = None
        self.counts: Counter[str] = Counter()
        self.errors: dict[str, Counter[str]] = {"retryable": Counter(), "non_retryable": Counter()}
        self.touched: set[bytes] = set()
        self.counters_touched: set[bytes] = set()
        self.writer_base = secrets.randbits(20) * 1000
        self.stopping = asyncio.Event()
        self.load_start = 0.0
        self.load_end = 0.0
        self.clock = {"monotonic": time.monotonic(), "wall": time.time()}

    # -- preload ---------------------------------------------------------------------------

    def _preload_values(self) -> Iterable[tuple[bytes, bytes]]:
        size = self.cfg.workload.value_size
        prefix = self.cfg.workload.key_prefix.encode()
        for i in range(self.cfg.preload):
            yield data_key(prefix, i), unique_value(0, i, size)

    async def preload(self, client: AsyncClient) -> float:
        t = time.monotonic()
        items = list(self._preload_values())
        if self.cfg.preload_redis:
            import redis

            r = redis.Redis.from_url(self.cfg.preload_redis)
            try:
                for i in range(0, len(items), _PRELOAD_BATCH):
                    pipe = r.pipeline(transaction=False)
                    for k, v in items[i : i + _PRELOAD_BATCH]:
                        pipe.set(k, v)
                    pipe.execute()
            finally:
                r.close()
        else:
            sem = asyncio.Semaphore(max(64, self.cfg.concurrency))

            async def put(k: bytes, v: bytes) -> None:
                async with sem:
                    for _ in range(10):
                        try:
                            await client.set(k, v)
                            return
                        except NetMigrateError as exc:
                            if not classify(exc)[0]:
                                raise
                    raise RuntimeError(f"preload of {k!r} failed")

            await asyncio.gather(*(put(k, v) for k, v in items))
        for k, v in items:
            self.history.initial[k] = v
        return time.monotonic() - t

    # -- load ------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        retryable, kind = classify(exc)
        self.errors["retryable" if retryable else "non_retryable"][kind] += 1
        assert self.timeline is not None
        self.timeline.error(kind)

    async def _worker(self, client: AsyncClient, w: int) -> None:
        ch = Chooser(self.cfg.workload, w)
        h = self.history
        tl = self.timeline
        assert tl is not None
        writer = self.writer_base + w + 1
        seq = 0
        size = self.cfg.workload.value_size
        clock = time.monotonic_ns
        while not self.stopping.is_set():
            op = ch.op()
            t = clock()
            try:
                if op == "get":
                    k = ch.key()
                    rec = h.invoke("get", k)
                    v = await client.get(k)
                    h.complete(rec, v)
                elif op == "set":
                    k = ch.key()
                    seq += 1
                    val = unique_value(writer, seq, size)
                    rec = h.invoke("set", k, val)
                    self.touched.add(k)
                    await client.set(k, val, ttl_ms=ch.ttl())
                    h.complete(rec)
                elif op == "del":
                    k = ch.key()
                    rec = h.invoke("del", k)
                    self.touched.add(k)
                    await client.delete(k)
                    h.complete(rec)
                elif op == "incrby":
                    k = ch.counter()
                    rec = h.invoke("incr", k)
                    self.counters_touched.add(k)
                    n = await client.incrby(k, 1)
                    h.complete(rec, result=n)
                else:
                    keys = list(dict.fromkeys(ch.key() for _ in range(self.cfg.workload.mget_keys)))
                    recs = [h.invoke("get", k) for k in keys]
                    vals = await client.mget(keys)
                    for r, v in zip(recs, vals, strict=True):
                        h.complete(r, v)
            except NetMigrateError as exc:
                self._failed(exc)
                continue
            self.counts[op] += 1
            tl.record(OP_INDEX[op], t, clock())

    async def _watch_stop(self, deadline: float) -> None:
        while not self.stopping.is_set():
            if time.monotonic() >= deadline:
                break
            if self.cfg.stop_file is not None and self.cfg.stop_file.exists():
                break
            await asyncio.sleep(0.05)
        self.stopping.set()

    async def final_read(self, client: AsyncClient) -> None:
        sem = asyncio.Semaphore(64)

        async def read(k: bytes, counter: bool) -> None:
            async with sem:
                for attempt in range(20):
                    try:
                        v = await client.get(k)
                        break
                    except NetMigrateError:
                        await asyncio.sleep(0.05 * (attempt + 1))
                else:
                    raise RuntimeError(f"final read of {k!r} kept failing")
            if counter:
                self.history.final_counters[k] = int(v) if v is not None else 0
            else:
                self.history.final[k] = v

        await asyncio.gather(
            *(read(k, False) for k in sorted(self.touched)),
            *(read(k, True) for k in sorted(self.counters_touched)),
        )

    def _timeline_json(self) -> dict[str, Any]:
        """The timeline with every bin up to the last operation's, each with its histogram."""
        if self.timeline is None:
            return {}
        end_ns = self.timeline.bin_end(int(self.load_end * 1e9))
        return self.timeline.timeline(end_ns, hdr=True)

    async def run(self, on_ready: Callable[[float], None] | None = None) -> dict[str, Any]:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        (cfg.out / READY_FILE).unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        async with AsyncClient(
            cfg.service,
            cfg.keyspace,
            timeout=cfg.timeout,
            retries=cfg.retries,
            deadline=cfg.deadline,
            max_datagram=cfg.max_datagram,
        ) as client:
            preload_s = await self.preload(client) if cfg.preload else 0.0
            # The report places the migration on this clock: CLOCK_MONOTONIC, as the history.
            self.timeline = Recorder(clock=time.monotonic_ns, op_names=OPS)
            self.load_start = self.timeline.t0_ns / 1e9
            (cfg.out / READY_FILE).write_text(f"{self.load_start}\n")
            if on_ready is not None:
                on_ready(self.load_start)
            watcher = asyncio.create_task(self._watch_stop(self.load_start + cfg.duration))
            sampler = CpuSampler(cfg.cpu_run_dir) if cfg.cpu_run_dir is not None else None
            sampling = (
                asyncio.create_task(sampler.run(self.stopping)) if sampler is not None else None
            )
            # The history grows by every operation: keep it out of the full collections.
            freezer = asyncio.create_task(gc_policy.freeze_periodically(self.stopping))
            await asyncio.gather(*(self._worker(client, w) for w in range(cfg.concurrency)))
            await watcher
            await freezer
            self.load_end = time.monotonic()
            if sampler is not None and sampling is not None:
                await sampling
                sampler.take()
            # Quiescent: every worker has its answer; now read what the run left behind.
            await self.final_read(client)
            stats = asdict(client.stats)
        check = self.history.check()
        ops = sum(self.counts.values())
        secs = self.load_end - self.load_start
        doc = {
            "config": {
                "service": f"{cfg.service[0]}:{cfg.service[1]}",
                "keyspace": cfg.keyspace,
                "preload": cfg.preload,
                "concurrency": cfg.concurrency,
                "duration": cfg.duration,
                "timeout": cfg.timeout,
                "retries": cfg.retries,
                "deadline": cfg.deadline,
                "workload": asdict(cfg.workload),
            },
            "clock": self.clock,
            "preload_s": round(preload_s, 3),
            "load_start_monotonic": self.load_start,
            "load_end_monotonic": self.load_end,
            "ops": ops,
            "ops_per_s": round(ops / secs, 1) if secs > 0 else 0.0,
            "counts": dict(self.counts),
            "errors": {k: dict(v) for k, v in self.errors.items()},
            "errors_total": {k: sum(v.values()) for k, v in self.errors.items()},
            "keys_touched": len(self.touched),
            "key_prefix": cfg.workload.key_prefix,
            # What the quiescent final read found: data keys present, counters present.
            "final_present": sum(v is not None for v in self.history.final.values()),
            "final_counters_present": sum(
                1 for k in self.counters_touched if self.history.final_counters.get(k, 0) > 0
            ),
            "counters_touched": len(self.counters_touched),
            "client": stats,
            "checker": check.summary(),
            "timeline": self._timeline_json(),
            "cpu": None if sampler is None else sampler.to_json(),
        }
        self.history.dump(cfg.out / HISTORY_FILE)
        (cfg.out / LOAD_FILE).write_text(json.dumps(doc) + "\n")
        return doc


def run_load(cfg: LoadConfig) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(LoadRun(cfg).run())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(LoadRun(cfg).run())
