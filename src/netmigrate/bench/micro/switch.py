"""Benchmark of the lab switch: packets per second and added latency for NetMigrate GETs.

Real veths in ``nmt3-`` namespaces and the real ``netmigrate switch`` process, pinned to one
CPU; the load generator (this process) runs on another. Client host 1 sends GET datagrams
to the keyspace's service address through port 1; the switch steers each to server 2 on
port 2 (keyspace lookup, slot map read, server lookup, rewrite, checksum, counters).

- Throughput: open-loop offered rates for a few seconds each; delivered = frames that reach
  host 2's interface (its kernel counter), loss = what never arrives. The switch's maximum
  rate is the highest offered rate it delivers with < 0.5 % loss.
- Latency: one GET at a time (no queueing), send to receive, through the switch and, as the
  baseline, over a direct veth pair between the same kind of namespaces; the difference is
  what the switch adds.

Run: ``python -m netmigrate.bench.micro.switch [--duration S] [--rates R,R,...] [--json FILE]``
(root, two or more CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netmigrate.lab.forwarding import DEVICE_CONFIG, SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import run_switch
from netmigrate.lab.veth_topology import host_socket, veth_topology
from netmigrate.p4rt import P4RTSession, PipelineConfig, ensure_table_entries, install_pipeline
from netmigrate.p4rt.frames import udp_frame
from netmigrate.protocol.codec import Get, encode_request
from netmigrate.protocol.constants import SERVICE_PORT_BASE, SLOT_COUNT, Op
from netmigrate.resources import p4info_path
from netmigrate.switch.control import ControlClient

#: Distinct GET frames the generator cycles through (different slots and request ids).
FRAMES = 4096
LOSS_OK = 0.005


@dataclass
class RatePoint:
    offered_pps: float
    sent: int
    delivered: int
    delivered_pps: float
    loss: float
    #: Share of its CPU the switch process ran (1.0: the core was busy all the time).
    switch_cpu: float = 0.0
    #: Switch CPU time per delivered frame, microseconds (1e6 / this = frames/s per core).
    cpu_us_per_frame: float = 0.0


@dataclass
class LatencyStats:
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float


@dataclass
class BenchResult:
    cpu: int
    frame_bytes: int
    rings: bool = True
    points: list[RatePoint] = field(default_factory=list)
    max_pps: float = 0.0
    switch_latency: LatencyStats | None = None
    direct_latency: LatencyStats | None = None
    bare_forwarder_latency: LatencyStats | None = None
    added_p50_us: float = 0.0
    added_p99_us: float = 0.0
    command: str = ""
    #: The switch's own counters at the end (control socket ``stats``).
    switch_stats: dict = field(default_factory=dict)


def get_frames(n: int = FRAMES, key: bytes = b"key:%06d") -> list[bytes]:
    """``n`` GET frames from host 1 to the service address, each with its own key and id."""
    out = []
    for i in range(n):
        payload = encode_request(Op.GET, (7 << 32) | i, 1, i % SLOT_COUNT, Get(key % i))
        out.append(
            udp_frame(
                payload,
                dst_ip=SERVICE_IP,
                dst_port=SERVICE_PORT_BASE,
                src_ip="10.9.0.1",
                src_port=40000,
                dst_mac=bytes.fromhex("020000000f00"),
            )
        )
    return out


def rx_packets(netns: str, iface: str = "eth0") -> int:
    out = subprocess.run(
        ["ip", "-n", netns, "-s", "-j", "link", "show", iface],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def offer(sock: socket.socket, frames: list[bytes], rate: float, duration: float) -> int:
    """Send at ``rate`` frames/s (0: as fast as possible) for ``duration`` s; returns the count."""
    send = sock.send
    n = len(frames)
    sent = 0
    burst = 64
    start = time.perf_counter()
    end = start + duration
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            due = int((now - start) * rate)
            if sent >= due:
                time.sleep(min(0.0005, (sent - due + burst) / rate))
                continue
        for _ in range(burst):
            try:
                send(frames[sent % n])
                sent += 1
            except OSError:
                pass
    return sent


def cpu_ns(pid: int) -> int:
    """Nanoseconds process ``pid`` has run on a CPU (scheduler statistics)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def measure_rate(
    tx: socket.socket, sink_ns: str, frames, rate: float, duration: float, switch_pid: int
) -> RatePoint:
    before = rx_packets(sink_ns)
    cpu0 = cpu_ns(switch_pid)
    t0 = time.perf_counter()
    sent = offer(tx, frames, rate, duration)
    elapsed = time.perf_counter() - t0
    time.sleep(0.3)  # let queued frames drain
    cpu = cpu_ns(switch_pid) - cpu0
    delivered = rx_packets(sink_ns) - before
    return RatePoint(
        offered_pps=sent / elapsed,
        sent=sent,
        delivered=delivered,
        delivered_pps=delivered / elapsed,
        loss=max(0.0, 1 - delivered / sent) if sent else 0.0,
        switch_cpu=cpu / 1e9 / (elapsed + 0.3),
        cpu_us_per_frame=cpu / 1e3 / delivered if delivered else 0.0,
    )


def ping_pong(tx: socket.socket, rx: socket.socket, frames, count: int) -> LatencyStats:
    """One frame at a time: microseconds from send to receive."""
    samples = []
    rx.settimeout(1.0)
    for i in range(count):
        frame = frames[i % len(frames)]
        marker = frame[-12:]  # the unique key: the switch rewrites headers, not payloads
        t0 = time.perf_counter_ns()
        tx.send(frame)
        while True:
            try:
                got = rx.recv(65535)
            except TimeoutError:
                got = None
                break
            if got[-12:] == marker:
                break
        if got is not None:
            samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    return LatencyStats(len(samples), q[49], q[89], q[98], statistics.fmean(samples))


async def configure(address: str) -> None:
    async with P4RTSession(address, election_id=10) as s:
        await install_pipeline(s, PipelineConfig.load(p4info_path(), DEVICE_CONFIG))
        entries, _ = netmigrate_entries(lab_servers([1, 2]), default_owner=2)
        await ensure_table_entries(s, entries)


def run(
    duration: float,
    rates: list[float],
    latency_samples: int,
    cpu: int,
    rings: bool = True,
    switch_log: Path | None = None,
    loop: str = "auto",
) -> BenchResult:
    frames = get_frames()
    latency_frames = get_frames(latency_samples, key=b"lat:%06d")
    result = BenchResult(
        cpu=cpu, frame_bytes=len(frames[0]), rings=rings, command=" ".join(sys.argv)
    )
    others = sorted(os.sched_getaffinity(0) - {cpu})
    if others:
        os.sched_setaffinity(0, others)
    with (
        veth_topology([1, 2]) as topo,
        run_switch(
            *topo.port_args(),
            *([] if rings else ["--no-rings"]),
            *("--loop", loop),
            cpu=cpu,
            log_level="WARNING",
            keep_log=switch_log,
            control=True,
        ) as sw,
    ):
        asyncio.run(configure(sw.address))
        tx = host_socket(topo.hosts[1])
        try:
            # Latency first, on the idle switch, with frames of their own (unique keys).
            rx = host_socket(topo.hosts[2])
            try:
                result.switch_latency = ping_pong(tx, rx, latency_frames, latency_samples)
            finally:
                rx.close()
            for rate in rates:
                point = measure_rate(tx, topo.hosts[2], frames, rate, duration, sw.proc.pid)
                result.points.append(point)
                print(
                    f"offered {point.offered_pps:9.0f}/s  delivered "
                    f"{point.delivered_pps:9.0f}/s  loss {point.loss * 100:5.2f} %  "
                    f"switch CPU {point.switch_cpu * 100:3.0f} %, "
                    f"{point.cpu_us_per_frame:.2f} us/frame",
                    flush=True,
                )
            assert sw.control_socket is not None
            result.switch_stats = ControlClient(sw.control_socket).stats()
        finally:
            tx.close()
    ok = [p.delivered_pps for p in result.points if p.loss < LOSS_OK]
    result.max_pps = max(ok) if ok else 0.0
    result.direct_latency = direct_latency(latency_frames, latency_samples)
    result.bare_forwarder_latency = bare_forwarder_latency(latency_frames, latency_samples, cpu)
    result.added_p50_us = result.switch_latency.p50_us - result.direct_latency.p50_us
    result.added_p99_us = result.switch_latency.p99_us - result.direct_latency.p99_us
    return result


_BARE_FORWARDER = """
import os, socket, sys
ns, cpu = sys.argv[1], int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
from netmigrate.netns import call_in_netns
def make(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(263, 23, 1)  # PACKET_IGNORE_OUTGOING
    s.bind((name, 3))
    return s
a, b = call_in_netns(ns, lambda: (make("sw1"), make("sw2")))
print("ready", flush=True)
while True:
    b.send(a.recv(65535))
"""


def bare_forwarder_latency(frames: list[bytes], count: int, cpu: int) -> LatencyStats:
    """Ping-pong through the simplest user-space hop: a blocking recv/send loop in Python
    between the same veths, pinned like the switch. What the switch adds beyond it is the
    cost of its pipeline and runtime; the rest is any user-space hop on this machine."""
    with veth_topology([1, 2]) as topo:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BARE_FORWARDER, topo.switch_ns, str(cpu)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            tx, rx = host_socket(topo.hosts[1]), host_socket(topo.hosts[2])
            try:
                return ping_pong(tx, rx, frames, count)
            finally:
                tx.close()
                rx.close()
        finally:
            proc.kill()
            proc.wait()


def direct_latency(frames: list[bytes], count: int) -> LatencyStats:
    """The same ping-pong over one veth pair between two namespaces: the baseline."""
    import secrets

    tag = "nmt3-" + secrets.token_hex(3)
    a, b = f"{tag}-a", f"{tag}-b"
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        link = ["ip", "link", "add", "eth0", "netns", a, "type", "veth"]
        subprocess.run([*link, "peer", "name", "eth0", "netns", b], check=True)
        for ns in (a, b):
            subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        tx, rx = host_socket(a), host_socket(b)
        try:
            return ping_pong(tx, rx, frames, count)
        finally:
            tx.close()
            rx.close()
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netmigrate bench switch", description=__doc__)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per offered rate")
    p.add_argument(
        "--rates",
        default="50000,80000,100000,120000,150000,0",
        help="offered rates in frames/s, comma separated; 0 = as fast as the generator can",
    )
    p.add_argument("--latency-samples", type=int, default=2000)
    p.add_argument("--cpu", type=int, default=0, help="CPU the switch is pinned to")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--no-rings", action="store_true", help="run the switch with --no-rings")
    p.add_argument("--switch-log", type=Path, help="keep the switch's log here")
    p.add_argument("--loop", default="auto", help="the switch's --loop (auto, uvloop, asyncio)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the switch benchmark needs root (namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("the switch benchmark needs two CPUs (switch + generator)", file=sys.stderr)
        return 2
    # SIGTERM (e.g. from timeout) unwinds like Ctrl-C: namespaces and the switch are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    result = run(
        args.duration,
        rates,
        args.latency_samples,
        args.cpu,
        rings=not args.no_rings,
        switch_log=args.switch_log,
        loop=args.loop,
    )
    lat, base = result.switch_latency, result.direct_latency
    bare = result.bare_forwarder_latency
    assert lat is not None and base is not None and bare is not None
    p1 = result.switch_stats.get("ports", {}).get("1", {})
    print(
        "switch port 1: kernel drops {}, ring holes {}, stale {}, resyncs {}".format(
            p1.get("rx_kernel_drops"),
            p1.get("rx_ring_holes"),
            p1.get("rx_ring_stale"),
            p1.get("rx_ring_resyncs"),
        )
    )
    print(f"max rate with < {LOSS_OK * 100:g} % loss: {result.max_pps:.0f} frames/s (1 CPU)")
    print(
        f"latency through the switch p50 {lat.p50_us:.1f} us p99 {lat.p99_us:.1f} us; "
        f"direct veth p50 {base.p50_us:.1f} us p99 {base.p99_us:.1f} us; "
        f"added p50 {result.added_p50_us:.1f} us p99 {result.added_p99_us:.1f} us"
    )
    print(
        f"bare Python forwarder p50 {bare.p50_us:.1f} us p99 {bare.p99_us:.1f} us: the switch "
        f"adds p50 {lat.p50_us - bare.p50_us:.1f} us over the simplest user-space hop"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
