"""Agent throughput vs ``redis-benchmark``, on one Redis, in one run.

``netmigrate bench agent`` starts a cluster-mode redis-server in a temporary folder,
preloads the key space and starts a ``netmigrate agent`` subprocess (reaching Redis over its
unix socket, as a co-located agent should). Each round then runs:

1. ``redis-benchmark -c C -P 1 -d SIZE -r KEYS -t get,set`` against Redis directly (TCP); the
   GET/SET mix rate is the weighted harmonic mean ``1 / (r/get + (1-r)/set)``;
2. the same workload through the agent: the Python ``AsyncClient`` with C requests
   outstanding (fraction r GET, the rest SET, same keys and value size);
3. redis-benchmark again. The machine may be shared, so the agent is compared with the mean
   of the two runs around it.

It prints both rates, their ratio, and the CPU time per request of every process on each path
(a figure other load on the machine hardly moves). Nothing here is a pass/fail test: the
figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from netmigrate.client.aio import AsyncClient

KEYSPACE = 50000


@dataclass
class RedisBenchmarkRun:
    get_rps: float
    set_rps: float
    #: Rate of the GET/SET mix: 1 / (r / get + (1 - r) / set).
    mix_rps: float
    #: CPU time of redis-server plus redis-benchmark per request, microseconds.
    cpu_us: float


@dataclass
class AgentRun:
    rps: float
    errors: int
    retries: int
    #: CPU time per request, microseconds, of each process on the path.
    cpu_us_client: float
    cpu_us_agent: float
    cpu_us_redis: float

    @property
    def cpu_us(self) -> float:
        return self.cpu_us_client + self.cpu_us_agent + self.cpu_us_redis


@dataclass
class Round:
    """redis-benchmark, the agent, redis-benchmark again: the machine is shared, so the agent
    is compared with the mean of the two runs around it."""

    before: RedisBenchmarkRun
    agent: AgentRun
    after: RedisBenchmarkRun

    @property
    def redis_mix_rps(self) -> float:
        return (self.before.mix_rps + self.after.mix_rps) / 2

    @property
    def ratio(self) -> float:
        return self.agent.rps / self.redis_mix_rps

    @property
    def cpu_ratio(self) -> float:
        """redis-benchmark's CPU per request over the agent path's (load-independent)."""
        return (self.before.cpu_us + self.after.cpu_us) / 2 / self.agent.cpu_us


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / _TICK


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_name(i: int) -> bytes:
    """redis-benchmark's ``key:__rand_int__`` with -r: 12 zero-padded digits."""
    return b"key:%012d" % i


class RedisProcess:
    def __init__(self, binary: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nm-agent-bench-"))
        self.port = _free_port()
        self.socket = self.dir / "redis.sock"
        conf = self.dir / "redis.conf"
        # cluster-port explicitly: the default (port + 10000) fails for ports above 55535.
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nsave ""\nappendonly no\n'
            f"cluster-enabled yes\ncluster-port {_free_port()}\n"
            f"cluster-config-file {self.dir}/nodes.conf\nlogfile {self.dir}/redis.log\n"
            f"unixsocket {self.socket}\nunixsocketperm 700\n"
        )
        self.proc = subprocess.Popen([binary, str(conf)])
        self.client = redis.Redis(port=self.port)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        self.client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while b"cluster_state:ok" not in self.client.execute_command("CLUSTER", "INFO"):
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def preload(self, keys: int, value: bytes) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(key_name(i), value)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_redis_benchmark(server: RedisProcess, args: argparse.Namespace) -> RedisBenchmarkRun:
    """redis-benchmark GET and SET at the same concurrency, value size and key space."""
    cmd = [
        args.redis_benchmark,
        "-h", "127.0.0.1", "-p", str(server.port),
        "-c", str(args.concurrency), "-P", "1",
        "-n", str(args.redis_requests),
        "-d", str(args.value_size), "-r", str(args.keys),
        "-t", "get,set", "--csv",
    ]  # fmt: skip
    redis_before = process_cpu(server.proc.pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (
        process_cpu(server.proc.pid)
        - redis_before
        + children_after.ru_utime
        - children.ru_utime
        + children_after.ru_stime
        - children.ru_stime
    )
    rates: dict[str, float] = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("GET", "SET"):
            rates[cells[0]] = float(cells[1])
    get_rps, set_rps = rates["GET"], rates["SET"]
    mix = 1.0 / (args.read_ratio / get_rps + (1 - args.read_ratio) / set_rps)
    return RedisBenchmarkRun(get_rps, set_rps, mix, cpu / (2 * args.redis_requests) * 1e6)


class AgentProcess:
    def __init__(self, redis_url: str, extra: tuple[str, ...] = ()) -> None:
        cmd = [
            sys.executable, "-m", "netmigrate.cli", "agent",
            "--redis", redis_url,
            "--listen", "127.0.0.1:0", "--keyspace", str(KEYSPACE), "--server-id", "1",
            "--log-level", "WARNING", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            self.close()
            raise RuntimeError(f"agent did not start: {line!r}")
        udp = line.split()[1].removeprefix("udp=")
        host, _, port = udp.rpartition(":")
        self.address = (host, int(port))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def agent_load(
    address: tuple[str, int], args: argparse.Namespace, pids: tuple[int, int] | None = None
) -> AgentRun:
    """``args.concurrency`` workers on one AsyncClient for ``args.duration`` seconds (after a
    warm-up); ``pids`` (agent, redis-server) to measure their CPU time too."""
    value = b"x" * args.value_size
    read_ratio = args.read_ratio
    keys = [key_name(i) for i in range(args.keys)]
    done = 0
    errors = 0
    measuring = False
    stop = False

    def cpu() -> tuple[float, float, float]:
        agent_cpu, redis_cpu = (process_cpu(p) for p in pids) if pids else (0.0, 0.0)
        return _self_cpu(), agent_cpu, redis_cpu

    async with AsyncClient(address, KEYSPACE, timeout=1.0, retries=3) as client:

        async def worker(seed: int) -> None:
            nonlocal done, errors
            rng = random.Random(seed)
            pick = rng.choice
            rand = rng.random
            while not stop:
                try:
                    if rand() < read_ratio:
                        await client.get(pick(keys))
                    else:
                        await client.set(pick(keys), value)
                except Exception:
                    errors += 1
                if measuring:
                    done += 1

        tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        measuring = True
        start, cpu_start = time.perf_counter(), cpu()
        await asyncio.sleep(args.duration)
        measured, elapsed, cpu_end = done, time.perf_counter() - start, cpu()
        stop = True
        await asyncio.gather(*tasks)
    per_request = [
        (b - a) / max(measured, 1) * 1e6 for a, b in zip(cpu_start, cpu_end, strict=True)
    ]
    return AgentRun(measured / elapsed, errors, client.stats.retries, *per_request)


def _run_load(
    address: tuple[str, int], args: argparse.Namespace, pids: tuple[int, int] | None = None
) -> AgentRun:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(agent_load(address, args, pids))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(agent_load(address, args, pids))


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "load_avg_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netmigrate bench agent", description=__doc__)
    p.add_argument("--concurrency", type=int, default=64, help="outstanding requests (-c)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (-d)")
    p.add_argument("--keys", type=int, default=100_000, help="key space size (-r)")
    p.add_argument("--read-ratio", type=float, default=0.9, help="fraction of GETs")
    p.add_argument("--duration", type=float, default=8.0, help="agent measurement seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="agent warm-up seconds")
    p.add_argument("--redis-requests", type=int, default=200_000, help="redis-benchmark -n")
    p.add_argument("--rounds", type=int, default=3, help="redis-benchmark + agent rounds")
    p.add_argument("--redis-benchmark", default=shutil.which("redis-benchmark") or "")
    p.add_argument(
        "--agent-redis",
        choices=["unix", "tcp"],
        default="unix",
        help="how the agent reaches Redis (default: its unix socket, as a co-located agent "
        "should; redis-benchmark always uses TCP)",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    binary = shutil.which("redis-server")
    if not binary or not args.redis_benchmark:
        print("bench: needs redis-server and redis-benchmark (Debian redis-tools)", file=sys.stderr)
        return 2
    info = machine()
    server = RedisProcess(binary)
    agent: AgentProcess | None = None
    rounds: list[Round] = []
    try:
        server.preload(args.keys, b"x" * args.value_size)
        url = f"unix://{server.socket}" if args.agent_redis == "unix" else server.url
        agent = AgentProcess(url)
        for n in range(1, args.rounds + 1):
            before = run_redis_benchmark(server, args)
            run = _run_load(agent.address, args, (agent.proc.pid, server.proc.pid))
            after = run_redis_benchmark(server, args)
            r = Round(before, run, after)
            rounds.append(r)
            print(
                f"round {n}: redis-benchmark mix {before.mix_rps:,.0f}/s, {after.mix_rps:,.0f}/s "
                f"(GET {before.get_rps:,.0f}/{after.get_rps:,.0f}, SET {before.set_rps:,.0f}/"
                f"{after.set_rps:,.0f}) | agent {run.rps:,.0f}/s (errors {run.errors}, retries "
                f"{run.retries}) | ratio {r.ratio:.2f} | CPU us/request: redis-benchmark path "
                f"{(before.cpu_us + after.cpu_us) / 2:.1f}, agent path {run.cpu_us:.1f} (client "
                f"{run.cpu_us_client:.1f} + agent {run.cpu_us_agent:.1f} + redis "
                f"{run.cpu_us_redis:.1f})",
                flush=True,
            )
    finally:
        if agent is not None:
            agent.close()
        server.close()
    best = max(rounds, key=lambda r: r.ratio)
    print(
        f"ratio: best {best.ratio:.2f} (agent {best.agent.rps:,.0f}/s vs redis-benchmark "
        f"{best.redis_mix_rps:,.0f}/s), median {statistics.median(r.ratio for r in rounds):.2f}; "
        f"CPU cost ratio median {statistics.median(r.cpu_ratio for r in rounds):.2f}"
    )
    if args.json:
        payload = {
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "rounds": [asdict(r) | {"ratio": r.ratio, "cpu_ratio": r.cpu_ratio} for r in rounds],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
