"""How much load the harness itself can generate, so a report can show what bounds it.

Four measurements at the run's concurrency, no migration:

* ``generator_ops_per_s`` — the operation stream alone (op, key name, value), no I/O;
* ``null_client_ops_per_s`` — the full worker loop (generator, checker, HdrHistogram,
  timeline) against a client that answers at once: the harness's ceiling;
* ``harness_vs_redis`` — the harness against one standalone redis-server through
  redis-py (the stop-and-copy peer's client without the router), with the server's and the
  harness's CPU use;
* ``redis_benchmark`` — ``redis-benchmark -t set,get`` (C, same concurrency, same value size,
  ``-r records`` random keys) against the same server; ``mix_ops_per_s`` combines its GET and
  SET rates in the workload's read/write proportions (time per op averaged, RMW = GET + SET).

``harness_to_redis_benchmark`` < 1 means the Python load generator, not the server, limits
absolute throughput; ``server_cpu_pct_harness`` shows how busy the server was meanwhile. The
peers are compared by ratios (during / before) measured with the same harness, which this
bound does not change, but absolute ops/s in the reports are the harness's, not Redis's.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from netmigrate.bench.history import History, ValueFactory
from netmigrate.bench.redis_server import RedisServer, start_redis
from netmigrate.bench.runner import RunConfig, WorkerContext, drive, load
from netmigrate.bench.timeline import BEFORE, Recorder, histogram_summary
from netmigrate.bench.ycsb import INSERT, KeyNames, OperationStream, workload


class SingleRedisClient:
    """:class:`~netmigrate.bench.kv.KVClient` over one standalone server."""

    def __init__(self, conn: Redis) -> None:
        self._conn = conn
        self.get = conn.get

    async def set(self, key: bytes, value: bytes) -> None:
        await self._conn.set(key, value)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        await self._conn.mset(dict(items))

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return list(await self._conn.mget(list(keys)))

    async def aclose(self) -> None:
        await self._conn.aclose()


class NullClient:
    """Answers every call at once (yielding to the loop so workers interleave)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    async def get(self, key: bytes) -> bytes | None:
        await asyncio.sleep(0)
        return self._data.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        await asyncio.sleep(0)
        self._data[key] = value

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._data.update(items)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self._data.get(k) for k in keys]

    async def aclose(self) -> None:
        return None


def generator_rate(cfg: RunConfig, n: int = 200_000) -> float:
    """Operations per second the workload stream alone produces (with key and value bytes)."""
    spec = workload(cfg.workload)
    stream = OperationStream(spec, cfg.records, seed=cfg.seed)
    names = KeyNames()
    values = ValueFactory(cfg.value_size, cfg.seed)
    for k in range(cfg.records):  # key names are memoised during the load phase anyway
        names(k)
    t = time.perf_counter()
    for i in range(n):
        op, keynum = stream.next()
        names(keynum)
        if op != 0:
            values.make(1, i)
        if op == INSERT:
            stream.acknowledge_insert(keynum)
    return n / (time.perf_counter() - t)


def _context(client: Any, cfg: RunConfig) -> WorkerContext:
    spec = workload(cfg.workload)
    return WorkerContext(
        client=client,
        rec=Recorder(cfg.bin_ms),
        stream=OperationStream(spec, cfg.records, seed=cfg.seed),
        names=KeyNames(),
        values=ValueFactory(cfg.value_size, cfg.seed),
        history=History(),
        concurrency=cfg.concurrency,
        rate=None,
    )


def _parse_benchmark_csv(text: str) -> dict[str, float]:
    """``{"SET": rps, "GET": rps}`` from ``redis-benchmark --csv`` output."""
    rates: dict[str, float] = {}
    for line in text.splitlines():
        cells = [c.strip().strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("SET", "GET"):
            rates[cells[0]] = float(cells[1])
    return rates


def mix_rate(spec_name: str, get_rps: float, set_rps: float) -> float:
    """Throughput of the workload's mix if each op took redis-benchmark's time per op."""
    spec = workload(spec_name)
    time_per_op = (spec.read + spec.rmw) / get_rps + (
        spec.update + spec.insert + spec.rmw
    ) / set_rps
    return 1.0 / time_per_op


async def redis_benchmark(
    server: RedisServer, cfg: RunConfig, requests: int
) -> tuple[dict[str, float], float, float]:
    """Run redis-benchmark; (rates, wall seconds, server CPU seconds)."""
    cmd = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port),
        "-c", str(cfg.concurrency), "-n", str(requests), "-d", str(cfg.value_size),
        "-r", str(cfg.records), "-t", "set,get", "--csv",
    ]  # fmt: skip
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode or 1, cmd, out, err)
    rates = _parse_benchmark_csv(out.decode())
    if "SET" not in rates or "GET" not in rates:
        raise RuntimeError(f"unexpected redis-benchmark output: {out.decode()[:300]!r}")
    return rates, wall, cpu


async def measure(
    cfg: RunConfig, *, seconds: float = 5.0, benchmark_requests: int = 200_000
) -> dict[str, Any]:
    """All four measurements; see the module docstring for the fields."""
    cfg.validate()
    out: dict[str, Any] = {
        "workload": cfg.workload,
        "concurrency": cfg.concurrency,
        "records": cfg.records,
        "value_size": cfg.value_size,
        "seconds": seconds,
    }
    out["generator_ops_per_s"] = round(generator_rate(cfg), 1)

    null_ctx = _context(NullClient(), cfg)
    await load(null_ctx.client, cfg, null_ctx.names, null_ctx.values, null_ctx.history)
    ops, wall = await drive(null_ctx, min(seconds, 2.0))
    out["null_client_ops_per_s"] = round(ops / wall, 1)

    server = await start_redis(name="overhead")
    try:
        client = SingleRedisClient(server.client())
        try:
            ctx = _context(client, cfg)
            await load(client, cfg, ctx.names, ctx.values, ctx.history)
            cpu0, proc0 = server.cpu_seconds(), time.process_time()
            ops, wall = await drive(ctx, seconds)
            server_cpu, harness_cpu = server.cpu_seconds() - cpu0, time.process_time() - proc0
        finally:
            await client.aclose()
        out["harness_vs_redis"] = {
            "ops_per_s": round(ops / wall, 1),
            "latency_us": histogram_summary(ctx.rec.histogram(BEFORE)),
            "errors": ctx.rec.errors_total,
        }
        out["server_cpu_pct_harness"] = round(100 * server_cpu / wall, 1)
        out["harness_cpu_pct"] = round(100 * harness_cpu / wall, 1)
        rates, bwall, bcpu = await redis_benchmark(server, cfg, benchmark_requests)
    finally:
        server.stop()
    mix = mix_rate(cfg.workload, rates["GET"], rates["SET"])
    out["redis_benchmark"] = {
        "get_ops_per_s": rates["GET"],
        "set_ops_per_s": rates["SET"],
        "mix_ops_per_s": round(mix, 1),
        "requests_per_test": benchmark_requests,
        "server_cpu_pct": round(100 * bcpu / bwall, 1),
    }
    out["harness_to_redis_benchmark"] = round(out["harness_vs_redis"]["ops_per_s"] / mix, 4)
    out["read_fraction"] = workload(cfg.workload).read
    out["rmw_counts_as"] = "GET + SET" if workload(cfg.workload).rmw else None
    return out
