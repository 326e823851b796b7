"""Measure what a CFS period does to a throttled server's latency (docs/decisions.md D23).

Not a test (pytest does not collect it): run as root,

    .venv/bin/python tests/lab/measure_cfs_period.py [--share 0.25] [--periods 4,5,10,20,100]

A UDP echo server that burns ``--work-us`` of CPU per request runs in a cgroup of its own with
``share`` of a core; an open-loop client in the caller's cgroup sends Poisson traffic at a load
of 50 %, 80 % and 120 % of the quota's capacity and reports the latency distribution and the
longest stall per period. The client timestamps every request, so its own hiccups show too:
compare against ``--periods 0`` (no quota).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import struct
import subprocess
import sys
import time

from netmigrate.lab import cgroups as cg

_SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
work = float(sys.argv[1]) / 1e6
while True:
    data, addr = s.recvfrom(64)
    end = time.perf_counter() + work
    while time.perf_counter() < end:
        pass
    s.sendto(data, addr)
"""


def _closed_loop(
    sock: socket.socket, depth: int, seconds: float, backend: cg.Backend, group: str
) -> dict[str, float]:
    """``depth`` requests always in flight: the server saturates its quota, as in a benchmark
    whose servers are the bottleneck. Reports the longest gap between two answers (the stall a
    client sees) beside latency and throughput."""
    sock.setblocking(True)
    sock.settimeout(2.0)
    for _ in range(depth):
        sock.send(struct.pack("!d", time.perf_counter()))
    lat: list[float] = []
    gaps: list[float] = []
    start = last = time.perf_counter()
    used0 = backend.usage_ns(group)
    while (now := time.perf_counter()) < start + seconds:
        (t,) = struct.unpack("!d", sock.recv(64))
        now = time.perf_counter()
        lat.append(now - t)
        gaps.append(now - last)
        last = now
        sock.send(struct.pack("!d", now))
    wall = time.perf_counter() - start
    used = (backend.usage_ns(group) - used0) / 1e9 / wall
    lat.sort()
    gaps.sort()
    n = len(lat)
    return {
        "sent": n,
        "answered": n,
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[int(n * 0.99)] * 1e3,
        "max_ms": gaps[-1] * 1e3,
        "cpu": used,
        "ops": n / wall,
    }


def run_one(
    share: float,
    period_ms: float,
    load: float,
    work_us: float,
    seconds: float,
    closed: int = 0,
) -> dict[str, float]:
    backend = cg.detect()
    group = f"nm-measure-{os.getpid()}"
    # Period 0: a group whose quota (every core) never throttles, for the same accounting.
    period = int(period_ms * 1000) or 100_000
    quota = round(share * period) if period_ms else period * (os.cpu_count() or 1)
    backend.create(group, quota, period)
    joined = [str(p) for p in backend.procs_files(group)]
    code = (
        "import sys\n"
        "for p in sys.argv[2:]:\n"
        "    open(p, 'w').write(str(__import__('os').getpid()))\n" + _SERVER
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(work_us), *joined], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        if closed:
            return _closed_loop(sock, closed, seconds, backend, group)
        # The same offered load with and without a quota, so the runs compare.
        rate = load * share / (work_us / 1e6)
        lat: list[float] = []
        sent = 0
        start = time.perf_counter()
        used0 = backend.usage_ns(group)
        next_send = start
        deadline = start + seconds
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            while next_send <= now:
                sock.send(struct.pack("!d", next_send))
                sent += 1
                next_send += random.expovariate(rate)
            try:
                while True:
                    (t,) = struct.unpack("!d", sock.recv(64))
                    lat.append(time.perf_counter() - t)
            except BlockingIOError:
                pass
        # Answers still in flight: read them as they come (a sleep here would add to them).
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while len(lat) < sent:
                (t,) = struct.unpack("!d", sock.recv(64))
                lat.append(time.perf_counter() - t)
        used = (backend.usage_ns(group) - used0) / 1e9 / (time.perf_counter() - start)
        lat.sort()
        n = len(lat)
        return {
            "sent": sent,
            "answered": n,
            "p50_ms": lat[n // 2] * 1e3 if n else 0,
            "p99_ms": lat[int(n * 0.99)] * 1e3 if n else 0,
            "max_ms": lat[-1] * 1e3 if n else 0,
            "cpu": used,
        }
    finally:
        proc.kill()
        proc.wait()
        backend.remove(group)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--share", type=float, default=0.25)
    p.add_argument("--periods", default="0,4,5,10,20,50,100", help="ms; 0 = no quota")
    p.add_argument("--loads", default="0.5,0.8")
    p.add_argument("--work-us", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument(
        "--closed", type=int, default=0, help="N requests in flight instead of open loop"
    )
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    print(f"share {args.share}, {args.work_us} us per request, {args.seconds} s per point")
    head = f"{'period':>7} {'load':>5} {'sent':>7} {'answered':>8} {'p50':>7} {'p99':>7}"
    print(head + f" {'max':>7} {'cpu':>5}" + (" (max = longest gap)" if args.closed else ""))
    for period in (float(x) for x in args.periods.split(",")):
        for load in (float(x) for x in args.loads.split(",")):
            r = run_one(args.share, period, load, args.work_us, args.seconds, args.closed)
            print(
                f"{period:>5g}ms {load:>5.0%} {r['sent']:>7} {r['answered']:>8} "
                f"{r['p50_ms']:>6.2f}m {r['p99_ms']:>6.2f}m {r['max_ms']:>6.1f}m {r['cpu']:>5.2f}"
                + (f" {r['ops']:>7.0f}/s" if "ops" in r else ""),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
