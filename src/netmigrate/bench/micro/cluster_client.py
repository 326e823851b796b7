"""CPU per operation of the Redis Cluster load clients: the lean client against redis-py.

``netmigrate bench cluster-client`` starts the Redis Cluster peer's 2-node cluster (no CPU
budgets: the client's own cost is measured, not a throttled one), loads ``--keys`` keys and
then drives ``--ops`` GET/SET operations (``--read-share`` reads) from ``--concurrency``
coroutines through each client in turn, ``--rounds`` times, reporting this process's CPU time
(``time.process_time``) per operation and the ops/s reached. Only the client runs in this
process; the servers are other processes. The figures go to docs/benchmarks.md ("A load
generator that does not bound Redis Cluster").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from netmigrate.bench.kv import CountingEvents
from netmigrate.bench.peers import cluster_client
from netmigrate.bench.peers.redis_cluster import RedisClusterSystem, open_client
from netmigrate.bench.system import SetupPlan
from netmigrate.protocol.constants import SLOT_COUNT

CLIENTS = ("lean", "redis-py")


async def _drive(client: Any, keys: list[bytes], ops: int, concurrency: int, reads: float):
    left = ops
    value = b"y" * 100

    async def worker(seed: int) -> None:
        nonlocal left
        rnd = random.Random(seed)
        while left > 0:
            left -= 1
            key = keys[rnd.randrange(len(keys))]
            if rnd.random() < reads:
                await client.get(key)
            else:
                await client.set(key, value)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return {"cpu_us_per_op": round(cpu / ops * 1e6, 1), "ops_per_s": round(ops / wall)}


async def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    system = RedisClusterSystem()
    await system.setup(SetupPlan(10, 32, tuple(range(SLOT_COUNT // 2)), {"cpu": "off"}))
    out = []
    try:
        port = system.nodes[0].port
        keys = [b"user%d" % i for i in range(args.keys)]
        for rnd in range(args.rounds):
            for name in CLIENTS:
                events = CountingEvents()
                if name == "lean":
                    client = await cluster_client.open_lean_client(events, port=port)
                else:
                    client = await open_client(events, port=port, reinit=0)
                try:
                    await client.set_many([(k, b"x" * 100) for k in keys])
                    row = await _drive(client, keys, args.ops, args.concurrency, args.read_share)
                finally:
                    await client.aclose()
                out.append({"client": name, "round": rnd, **row, "events": events.counts})
    finally:
        await system.teardown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netmigrate bench cluster-client", description=__doc__)
    p.add_argument("--keys", type=int, default=2000)
    p.add_argument("--ops", type=int, default=40000, help="operations per client and round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--read-share", type=float, default=0.95, help="YCSB B: 0.95")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print JSON rows")
    args = p.parse_args(argv)
    rows = asyncio.run(_measure(args))
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['client']:9s} round {row['round']}: {row['cpu_us_per_op']:6.1f} µs CPU/op"
                f"  {row['ops_per_s']:8,} ops/s"
            )
    return 0
