"""The run phase's load generator split over several processes, inside the ``client`` budget.

One Python process driving a client is bounded by one core (and by the GIL well before it),
so a single harness process can be what limits a system's throughput instead of its servers
(docs/benchmarks.md, "CPU budgets"). With ``client_processes`` > 1 the run phase's workers
run in that many spawned processes instead, every one moved into the system's ``client``
role cgroup, so the load of every system shares the same client budget, and the report's CPU
section shows how much of it the load used.

Each process builds its own client from the system's :class:`~netmigrate.bench.system.
ClientRecipe`, runs its share of the workers with its own operation stream (its own seed)
and writer id, records into its own :class:`~netmigrate.bench.timeline.Recorder` started at
the parent's ``t0`` (CLOCK_MONOTONIC is one clock for all processes of the machine), and
switches phases when the parent tells it to. At the end it sends its recorder's data and its
history; the parent merges both, so the report, the timeline and the history checker see one
run as before.

Workloads with inserts stay in one process: every process would draw the same new key
numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from netmigrate.bench.history import History, Op
from netmigrate.bench.system import ClientRecipe, System
from netmigrate.bench.timeline import BEFORE, PhaseMark, Recorder

#: Seconds a process may take to start, import and open its client (it starts inside the
#: client budget, where importing the package is slow).
READY_TIMEOUT_S = 120.0
#: Seconds the processes get to send their results after ``stop``.
RESULT_TIMEOUT_S = 120.0
#: How often a process publishes its operation count (the live status line only).
COUNT_INTERVAL_S = 0.2
#: Seed offset between processes, so their operation streams differ.
SEED_STRIDE = 7919


@dataclass(frozen=True)
class ProcessPlan:
    """One load-generator process's share of the run (plain data: it is pickled)."""

    index: int
    workload: str
    records: int
    value_size: int
    value_seed: int
    seed: int
    expected_ops: int
    concurrency: int
    rate: float | None
    bin_ms: int
    writer: int


def split(total: int, parts: int) -> list[int]:
    """``total`` workers over ``parts`` processes, as evenly as possible (none empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plans(
    *,
    workload: str,
    records: int,
    value_size: int,
    seed: int,
    expected_ops: int,
    concurrency: int,
    rate: float | None,
    bin_ms: int,
    processes: int,
    first_writer: int,
) -> list[ProcessPlan]:
    shares = split(concurrency, processes)
    return [
        ProcessPlan(
            index=i,
            workload=workload,
            records=records,
            value_size=value_size,
            value_seed=seed,
            seed=seed + SEED_STRIDE * (i + 1),
            expected_ops=expected_ops // len(shares),
            concurrency=n,
            rate=None if rate is None else rate * n / concurrency,
            bin_ms=bin_ms,
            writer=first_writer + i,
        )
        for i, n in enumerate(shares)
    ]


# --- the child ------------------------------------------------------------------------------


def _op_rows(history: History) -> list[tuple[Any, ...]]:
    return [(o.kind, o.key, o.value, o.inv, o.comp, o.result) for o in history.ops]


def child_main(conn: Connection, recipe: ClientRecipe, plan: ProcessPlan, counts: Any) -> None:
    """Entry point of one load-generator process."""
    try:
        asyncio.run(_child(conn, recipe, plan, counts))
    except BaseException as exc:  # the parent must learn why, not wait for a timeout
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _child(conn: Connection, recipe: ClientRecipe, plan: ProcessPlan, counts: Any) -> None:
    # Imported here: the runner imports this module.
    from netmigrate.bench.history import ValueFactory
    from netmigrate.bench.runner import WorkerContext, worker
    from netmigrate.bench.ycsb import KeyNames, OperationStream, workload

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def read() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            # The parent is gone: stop, do not spin on a readable, closed pipe.
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), read)
    module, _, attr = recipe.factory.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    rec = Recorder(plan.bin_ms)
    client = await factory(rec, **recipe.kwargs)
    stream = OperationStream(
        workload(plan.workload), plan.records, seed=plan.seed, expected_ops=plan.expected_ops
    )
    history = History()
    ctx = WorkerContext(
        client, rec, stream, KeyNames(), ValueFactory(plan.value_size, plan.value_seed),
        history, plan.concurrency, plan.rate, writer=plan.writer,
    )  # fmt: skip
    tasks: list[asyncio.Task[None]] = []
    try:
        conn.send(("ready",))
        msg = await inbox.get()
        if msg[0] != "start":
            return
        rec.t0_ns = msg[1]
        rec.marks = [PhaseMark(BEFORE, msg[1])]
        tasks = [asyncio.create_task(worker(i, ctx)) for i in range(plan.concurrency)]
        while True:
            try:
                msg = await asyncio.wait_for(inbox.get(), COUNT_INTERVAL_S)
            except TimeoutError:
                counts[plan.index] = rec.ops_total
                continue
            if msg[0] == "phase":
                rec.set_phase(msg[1], msg[2])
            elif msg[0] == "stop":
                break
    finally:
        ctx.stop = True
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=30)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await client.aclose()
        loop.remove_reader(conn.fileno())
    conn.send(("result", rec.export(), _op_rows(history)))


# --- the parent -----------------------------------------------------------------------------


class LoadProcesses:
    """The load-generator processes of one run phase (the parent's side)."""

    def __init__(self, system: System, recipe: ClientRecipe, process_plans: Sequence[ProcessPlan]):
        self.system = system
        self.recipe = recipe
        self.plans = list(process_plans)
        self._mp = multiprocessing.get_context("spawn")
        self._counts = self._mp.RawArray("q", len(self.plans))
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._inbox: list[asyncio.Queue[Any]] = []
        #: The budget role the processes run in (None: no budgets).
        self.role: str | None = None
        self.start_s: float | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    async def start(self) -> None:
        """Spawn the processes, move them into the client budget, wait until each is ready."""
        loop = asyncio.get_running_loop()
        t = time.monotonic()
        try:
            for plan in self.plans:
                mine, theirs = self._mp.Pipe()
                proc = self._mp.Process(
                    target=child_main, args=(theirs, self.recipe, plan, self._counts),
                    name=f"nm-load-{plan.index}", daemon=True,
                )  # fmt: skip
                proc.start()
                theirs.close()
                self._procs.append(proc)
                self._conns.append(mine)
                queue: asyncio.Queue[Any] = asyncio.Queue()
                self._inbox.append(queue)
                loop.add_reader(mine.fileno(), self._reader(mine, queue))
                self.role = self.system.join_client_role(proc.pid)
            for i in range(len(self.plans)):
                msg = await self._expect(i, READY_TIMEOUT_S)
                if msg[0] != "ready":
                    raise RuntimeError(f"load process {i} did not start: {msg[1]}")
        except BaseException:
            await self.close()
            raise
        self.start_s = round(time.monotonic() - t, 3)

    @staticmethod
    def _reader(conn: Connection, queue: asyncio.Queue[Any]) -> Any:
        def read() -> None:
            try:
                queue.put_nowait(conn.recv())
            except (EOFError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
                queue.put_nowait(("error", "the process exited"))

        return read

    async def _expect(self, i: int, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(self._inbox[i].get(), timeout)
        except TimeoutError:
            return ("error", f"no answer within {timeout:g} s")

    def _send(self, msg: tuple[Any, ...]) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(msg)

    def go(self, t0_ns: int) -> None:
        self._send(("start", t0_ns))

    def phase(self, phase: int, t_ns: int) -> None:
        self._send(("phase", phase, t_ns))

    def ops_total(self) -> int:
        return sum(self._counts)

    async def stop(self, rec: Recorder, history: History) -> list[str]:
        """Stop the workers, merge every process's recorder and history into ``rec`` and
        ``history``; the processes' errors (empty: all merged)."""
        self._send(("stop",))
        problems = []
        for i in range(len(self.plans)):
            msg = await self._expect(i, RESULT_TIMEOUT_S)
            if msg[0] != "result":
                problems.append(f"load process {i}: {msg[1]}")
                continue
            rec.merge(msg[1])
            history.extend(Op(*row) for row in msg[2])
        await self.close()
        return problems

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for conn in self._conns:
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            conn.close()
        self._conns = []
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)

    def info(self) -> dict[str, Any]:
        return {
            "processes": len(self.plans),
            "workers": [p.concurrency for p in self.plans],
            "role": self.role,
            "start_s": self.start_s,
        }
