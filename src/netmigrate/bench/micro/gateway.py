"""``redis-benchmark`` through ``netmigrate gateway`` against ``redis-benchmark`` straight to
Redis, on the budgeted lab (issue #15's must-show; docs/compatibility.md "Throughput").

``netmigrate bench gateway`` brings up a lab stack of its own (``--prefix``; namespaces, lab
switch, three Redis with their agents, the client host's gateway) with the lab's default
per-host CPU budgets, and makes redis1's ``redis-server`` listen on its lab address too, so a
client host reaches it through the lab switch like any other host. Then, per test of ``-t``:

1. **direct**: ``redis-benchmark`` in the client host (its namespace and CPU budget) against
   redis1's address: client -> switch -> Redis;
2. **gateway**: the same ``redis-benchmark`` (same -c, -P, -r, -d, -n) against the client
   host's gateway on its loopback: client -> gateway (same host, same budget) -> switch ->
   agent -> Redis.

For each run it records requests/s, the CPU every lab host used against its budget (the
cgroups' usage and throttling; a host at >= 90 % of its budget is *saturated*) and the CPU of
the processes on the path (gateway, switch, redis1's agent and Redis). The ratio per test is
gateway / direct. A JSON report (``--json``) and a Markdown table on stdout; the lab is removed
at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netmigrate.lab import cgroups
from netmigrate.lab.cgroups import parse_cpu, read_usage
from netmigrate.lab.stack import (
    REDIS_PORT,
    Stack,
    StackConfig,
    free_control_base,
    free_tcp_port,
    stack_down,
    stack_up,
)
from netmigrate.lab.supervise import Supervisor
from netmigrate.lab.switch_process import SWITCH_SERVICE

DEFAULT_PREFIX = "nmgwb"
DEFAULT_TESTS = "get,set,incr,lpush,hset,zadd"
#: A host whose CPU use is at least this share of its budget ran into its quota.
SATURATED_PCT = 90.0
CLIENT_HOST = "client"
SOURCE = "redis1"


@dataclass(frozen=True, slots=True)
class Params:
    """redis-benchmark's options, the same for both paths."""

    tests: tuple[str, ...] = tuple(DEFAULT_TESTS.split(","))
    clients: int = 8
    pipeline: int = 16
    requests: int = 50_000
    keyspace: int = 0  # -r; 0: every command of a test names the same key
    data_size: int = 3  # -d, redis-benchmark's default
    #: -n of the direct runs (0: ``requests``): Redis is ~15x faster, and a run of a tenth of
    #: a second measures start-up more than Redis.
    direct_requests: int = 0

    def argv(self, test: str, host: str, port: int, *, direct: bool = False) -> list[str]:
        n = self.direct_requests if direct and self.direct_requests else self.requests
        argv = [
            shutil.which("redis-benchmark") or "redis-benchmark",
            "-h", host, "-p", str(port),
            "-c", str(self.clients), "-P", str(self.pipeline),
            "-n", str(n), "-d", str(self.data_size),
            "-t", test, "--csv",
        ]  # fmt: skip
        if self.keyspace:
            argv += ["-r", str(self.keyspace)]
        return argv


@dataclass(slots=True)
class HostUse:
    share: float
    cpu_s: float
    used_pct: float
    throttled_s: float
    saturated: bool


@dataclass(slots=True)
class PathRun:
    rps: float
    wall_s: float
    #: Lab host -> its CPU use during the run against its budget.
    hosts: dict[str, HostUse]
    #: Process on the path -> CPU seconds it used during the run.
    processes: dict[str, float]
    #: redis-benchmark's error lines (server errors it printed), at most a few.
    errors: list[str] = field(default_factory=list)

    @property
    def saturated(self) -> list[str]:
        return sorted(h for h, u in self.hosts.items() if u.saturated)

    def us_per_request(self, process: str) -> float:
        requests = self.rps * self.wall_s
        return self.processes.get(process, 0.0) / requests * 1e6 if requests else 0.0


@dataclass(slots=True)
class TestResult:
    test: str
    direct: PathRun
    gateway: PathRun

    @property
    def ratio(self) -> float:
        return self.gateway.rps / self.direct.rps if self.direct.rps else 0.0


def parse_csv(text: str) -> dict[str, float]:
    """redis-benchmark ``--csv`` output -> test name -> requests/s (header line skipped)."""
    rates: dict[str, float] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 or row[0] == "test":
            continue
        try:
            rates[row[0]] = float(row[1])
        except ValueError:
            continue
    return rates


def host_use(before: Mapping[str, Any], after: Mapping[str, Any], wall_s: float) -> HostUse:
    """One host's CPU over an interval, from two :func:`netmigrate.lab.cgroups.read_usage`
    host entries."""
    cpu = after["usage_s"] - before["usage_s"]
    share = float(after["share"])
    pct = 100.0 * cpu / (wall_s * share) if wall_s > 0 and share > 0 else 0.0
    return HostUse(
        share=share,
        cpu_s=round(cpu, 4),
        used_pct=round(pct, 1),
        throttled_s=round(after["throttled_s"] - before["throttled_s"], 4),
        saturated=pct >= SATURATED_PCT,
    )


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / _TICK


class Lab:
    """The bench's lab stack, redis1's Redis reachable on its lab address."""

    def __init__(self, prefix: str, cpu: str | None) -> None:
        # Free ports: another lab on the machine (a test's, a bench run's) may hold the
        # defaults.
        config = StackConfig(
            prefix=prefix,
            grpc_port=free_tcp_port(),
            control_base=free_control_base(),
        )
        self.config = dataclasses.replace(config, cpu=parse_cpu(cpu, config.topology().host_names))
        self.stack: Stack | None = None

    def up(self) -> Stack:
        # A lab left by an interrupted run holds old keys: start fresh.
        stack_down(self.config)
        self.stack = stack_up(self.config)
        source = self.stack.server(SOURCE)
        # The lab's Redis listens on loopback only (its agent uses the unix socket); the
        # direct path needs it on the host's lab address, reached through the switch.
        self.redis_cli(source.redis_socket, "CONFIG", "SET", "bind", f"127.0.0.1 {source.ip}")
        self.redis_cli(source.redis_socket, "CONFIG", "SET", "protected-mode", "no")
        return self.stack

    @staticmethod
    def redis_cli(socket_path: str, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-s", socket_path, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        if out.startswith("ERR") or out.startswith("(error)"):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {out}")
        return out

    def down(self) -> None:
        stack_down(self.config)

    def pids(self) -> dict[str, int | None]:
        assert self.stack is not None
        sup = Supervisor(self.stack.run_dir)
        return {
            "gateway": sup.status("client-gateway").pid,
            "switch": sup.status(SWITCH_SERVICE).pid,
            "agent": sup.status(f"{SOURCE}-agent").pid,
            "redis": sup.status(f"{SOURCE}-redis").pid,
        }

    def run_benchmark(self, argv: Sequence[str], timeout: float) -> PathRun:
        """``argv`` in the client host (namespace and CPU budget), measured."""
        assert self.stack is not None
        state = cgroups.load(self.stack.run_dir)
        full = ["ip", "netns", "exec", self.stack.client_netns, *argv]
        if state is not None:
            full = cgroups.join_argv(state, CLIENT_HOST, full)
        pids = self.pids()
        cpu0 = {name: process_cpu(pid) for name, pid in pids.items()}
        use0 = read_usage(self.stack.run_dir)
        t0 = time.monotonic()
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        wall = time.monotonic() - t0
        use1 = read_usage(self.stack.run_dir)
        cpu1 = {name: process_cpu(pid) for name, pid in pids.items()}
        if proc.returncode != 0:
            raise RuntimeError(f"redis-benchmark failed ({proc.returncode}): {proc.stderr[-500:]}")
        rates = parse_csv(proc.stdout)
        if not rates:
            raise RuntimeError(f"no rate in redis-benchmark's output: {proc.stdout[-500:]!r}")
        hosts: dict[str, HostUse] = {}
        if use0 is not None and use1 is not None:
            for host, after in use1["hosts"].items():
                if host in use0["hosts"]:
                    hosts[host] = host_use(use0["hosts"][host], after, wall)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "rror" in line][:5]
        return PathRun(
            rps=next(iter(rates.values())),
            wall_s=round(wall, 3),
            hosts=hosts,
            processes={n: round(cpu1[n] - cpu0[n], 3) for n in pids},
            errors=errors,
        )


def run(
    params: Params,
    prefix: str = DEFAULT_PREFIX,
    cpu: str | None = None,
    keep: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    lab = Lab(prefix, cpu)
    try:
        stack = lab.up()
        source = stack.server(SOURCE)
        gw_host, _, gw_port = stack.gateway.rpartition(":")
        timeout = 60 + params.requests / 500
        results: list[TestResult] = []
        for test in params.tests:
            direct = lab.run_benchmark(
                params.argv(test, source.ip, REDIS_PORT, direct=True), timeout
            )
            progress(f"{test}: direct {direct.rps:,.0f}/s")
            gateway = lab.run_benchmark(params.argv(test, gw_host, int(gw_port)), timeout)
            progress(f"{test}: gateway {gateway.rps:,.0f}/s")
            results.append(TestResult(test, direct, gateway))
        budgets = lab.config.cpu
        return report(
            params,
            results,
            budgets.to_dict() if hasattr(budgets, "to_dict") else None,
        )
    finally:
        if not keep:
            lab.down()


def report(
    params: Params, results: Sequence[TestResult], budgets: dict[str, Any] | None
) -> dict[str, Any]:
    tests = []
    for r in results:
        entry: dict[str, Any] = {"test": r.test, "ratio": round(r.ratio, 3)}
        for name, path in (("direct", r.direct), ("gateway", r.gateway)):
            d = asdict(path)
            d["saturated"] = path.saturated
            d["us_per_request"] = {p: round(path.us_per_request(p), 2) for p in path.processes}
            entry[name] = d
        tests.append(entry)
    return {
        "schema": "netmigrate.bench.gateway/1",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "python": platform.python_version(),
        },
        "params": asdict(params),
        "budgets": budgets,
        "tests": tests,
    }


def table(rep: Mapping[str, Any]) -> str:
    lines = [
        "| test | direct req/s | gateway req/s | ratio | direct: saturated | gateway: saturated "
        "| gateway: CPU % of budget | gateway µs/req: gateway, switch, agent, redis |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for t in rep["tests"]:
        d, g = t["direct"], t["gateway"]
        used = ", ".join(f"{h} {u['used_pct']:.0f}" for h, u in sorted(g["hosts"].items()))
        us = g["us_per_request"]
        per = ", ".join(f"{us.get(p, 0):.1f}" for p in ("gateway", "switch", "agent", "redis"))
        lines.append(
            f"| {t['test']} | {d['rps']:,.0f} | {g['rps']:,.0f} | {t['ratio']:.3f} "
            f"| {', '.join(d['saturated']) or '-'} | {', '.join(g['saturated']) or '-'} "
            f"| {used} | {per} |"
        )
    return "\n".join(lines)


#: An instance: a slots dataclass' class attributes are descriptors, not its defaults.
_DEFAULTS = Params()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netmigrate bench gateway", description=__doc__)
    p.add_argument("-t", "--tests", default=DEFAULT_TESTS)
    p.add_argument("-c", "--clients", type=int, default=_DEFAULTS.clients)
    p.add_argument("-P", "--pipeline", type=int, default=_DEFAULTS.pipeline)
    p.add_argument("-n", "--requests", type=int, default=_DEFAULTS.requests)
    p.add_argument(
        "--direct-requests",
        type=int,
        default=200_000,
        help="-n of the direct runs (0: the same as -n); the rest of the options are the same",
    )
    p.add_argument("-r", "--keyspace", type=int, default=_DEFAULTS.keyspace)
    p.add_argument("-d", "--data-size", type=int, default=_DEFAULTS.data_size)
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="the bench lab's prefix")
    p.add_argument("--cpu", default=None, help="lab budgets as `lab up --cpu` (default: on)")
    p.add_argument("--keep", action="store_true", help="leave the lab up (for profiling)")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the gateway benchmark runs the lab (namespaces): run as root", file=sys.stderr)
        return 2
    if shutil.which("redis-benchmark") is None:
        print("the gateway benchmark needs redis-benchmark (Debian redis-tools)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the lab is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    params = Params(
        tests=tuple(t.strip() for t in args.tests.split(",") if t.strip()),
        clients=args.clients,
        pipeline=args.pipeline,
        requests=args.requests,
        keyspace=args.keyspace,
        data_size=args.data_size,
        direct_requests=args.direct_requests,
    )
    rep = run(
        params, args.prefix, args.cpu, args.keep, lambda m: print(m, file=sys.stderr, flush=True)
    )
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
    print(table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
