"""Copy throughput of a migration between two real agents, in one run.

``netmigrate bench copy`` starts two cluster-mode redis-servers in temporary
folders, preloads the source with ``--keys`` keys of ``--value-size`` bytes (over every slot,
or over ``--slots N`` slots for big slots), starts two
``netmigrate agent`` processes (source owns every slot, target none; each reaches its Redis
over the unix socket) and, per configuration (batch size x slots in parallel), migrates every
slot to the target and back with the controller library, reporting wall time, keys/s, slots/s
and the CPU time of each agent per key. No switch: SLOT_START goes to the target directly (the
switch's part is measured by the lab benchmarks). Nothing here is a pass/fail test: the figures
go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from netmigrate.agent.reserved import slot_tag
from netmigrate.bench.micro.agent import RedisProcess, _free_port, machine, process_cpu
from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions, run
from netmigrate.protocol.constants import SLOT_COUNT

KEYSPACE = 50000


@dataclass
class BenchRun:
    batch: int
    parallel: int
    direction: str
    keys: int
    seconds: float
    keys_per_second: float
    slots_per_second: float
    source_cpu_us_per_key: float
    target_cpu_us_per_key: float


class AgentProc:
    def __init__(self, server: RedisProcess, server_id: int, slots: str) -> None:
        self.control = f"127.0.0.1:{_free_port()}"
        cmd = [
            sys.executable, "-m", "netmigrate.cli", "agent",
            "--redis", f"unix://{server.socket}",
            "--listen", "127.0.0.1:0", "--control", self.control,
            "--keyspace", str(KEYSPACE), "--server-id", str(server_id), "--slots", slots,
            "--log-level", "WARNING",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            self.close()
            raise RuntimeError(f"agent did not start: {line!r}")
        host, _, port = line.split()[1].removeprefix("udp=").rpartition(":")
        self.address = (host, int(port))
        self.endpoint = AgentEndpoint(server_id, self.control)

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _migrate(
    src: AgentProc,
    dst: AgentProc,
    batch: int,
    parallel: int,
    keys: int,
    slots: int,
    direction: str,
) -> BenchRun:
    keyspace = KeyspaceRef(KEYSPACE, *dst.address)
    cpu_src, cpu_dst = src.cpu(), dst.cpu()
    start = time.monotonic()
    result = await run(
        src.endpoint,
        dst.endpoint,
        range(slots),
        keyspace=keyspace,
        options=MigrationOptions(batch=batch, parallel=parallel, grace=0, poll=0.5),
        migration_id=f"bench-{direction}-{batch}-{parallel}-{time.time_ns()}",
        finalize=True,
    )
    seconds = time.monotonic() - start
    if result.keys_copied != keys:
        raise RuntimeError(f"copied {result.keys_copied} keys, expected {keys}")
    return BenchRun(
        batch,
        parallel,
        direction,
        keys,
        seconds,
        keys / seconds,
        slots / seconds,
        (src.cpu() - cpu_src) / keys * 1e6,
        (dst.cpu() - cpu_dst) / keys * 1e6,
    )


async def bench(args: argparse.Namespace) -> list[BenchRun]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found")
    a, b = RedisProcess(binary), RedisProcess(binary)
    agents: list[AgentProc] = []
    try:
        pipe = a.client.pipeline(transaction=False)
        value = b"v" * args.value_size
        for i in range(args.keys):
            if args.slots == SLOT_COUNT:
                key = b"key:%012d" % i  # spread over every slot by the hash
            else:
                key = b"{%s}:key:%012d" % (slot_tag(i % args.slots), i)
            pipe.set(key, value)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        one = AgentProc(a, 1, "all")
        agents.append(one)
        two = AgentProc(b, 2, "none")
        agents.append(two)
        runs = []
        for config in args.configs:
            batch, parallel = (int(x) for x in config.split("x"))
            for src, dst, direction in ((one, two, "1->2"), (two, one, "2->1")):
                r = await _migrate(src, dst, batch, parallel, args.keys, args.slots, direction)
                print(
                    f"batch {batch:5d} parallel {parallel:3d} {direction}: {r.seconds:6.1f} s "
                    f"{r.keys_per_second:9,.0f} keys/s {r.slots_per_second:6,.0f} slots/s  "
                    f"CPU/key source {r.source_cpu_us_per_key:5.1f} us target "
                    f"{r.target_cpu_us_per_key:5.1f} us",
                    flush=True,
                )
                runs.append(r)
        return runs
    finally:
        for agent in agents:
            agent.close()
        a.close()
        b.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netmigrate bench copy", description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument(
        "--slots",
        type=int,
        default=SLOT_COUNT,
        help="spread the keys over this many slots (0..N-1) and migrate those (default: all)",
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=["256x4", "1000x8", "64x1"],
        metavar="BATCHxPARALLEL",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if not 1 <= args.slots <= SLOT_COUNT:
        p.error(f"--slots must be 1..{SLOT_COUNT}")
    runs = asyncio.run(bench(args))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "runs": [asdict(r) for r in runs]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
