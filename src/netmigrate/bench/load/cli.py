"""``netmigrate bench load``: closed-loop load with a recorded history (run it in the client host).

    netmigrate bench load --stack /run/netmigrate-lab/nm --preload 100000 --preload-direct \\
        --concurrency 32 --duration 60 --out out/load

writes ``OUT/load.json`` (timeline, counts, errors, checker summary), ``OUT/history.jsonl`` and,
once the preload is done and the load runs, ``OUT/ready``. Stops after ``--duration`` seconds,
on SIGTERM / SIGINT, or when ``--stop-file`` appears; then reads every touched key once more
(the final state the checker needs). Exit status 0 when the checker found nothing and no
operation failed with a non-retryable error, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from netmigrate.bench.load.workload import DEFAULT_MIX, WorkloadConfig, parse_mix
from netmigrate.client.cli import add_client_options

if TYPE_CHECKING:
    from netmigrate.bench.load.runner import LoadConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--stack", type=Path, metavar="RUN_DIR",
                   help="take service, keyspace and client namespace from the lab stack "
                   "recorded there (netmigrate lab up --full)")  # fmt: skip
    p.add_argument("--service", metavar="HOST:PORT", help="keyspace service address")
    p.add_argument("--cpu-run-dir", type=Path, metavar="RUN_DIR",
                   help="read the CPU budgets of the lab recorded there for the report "
                   "(default: --stack's)")  # fmt: skip
    p.add_argument("--keyspace", type=int, help="keyspace id (default: the service port)")
    p.add_argument("--netns", help="run inside this network namespace (needs root)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--preload", type=int, default=0, metavar="N", help="keys written first")
    p.add_argument("--preload-redis", metavar="URL", help="preload straight into this Redis")
    p.add_argument("--preload-direct", action="store_true",
                   help="with --stack: preload into the default owner's Redis")  # fmt: skip
    p.add_argument("--keys", type=int, help="key universe (default: --preload, or 10000)")
    p.add_argument("--counters", type=int, default=1000, help="INCRBY counter keys")
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--mix", default=DEFAULT_MIX, help="operation weights (%(default)s)")
    p.add_argument("--ttl-fraction", type=float, default=0.1, help="SETs with a TTL")
    p.add_argument("--ttl-ms", type=int, default=3_600_000, help="that TTL (outlives the run)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default %(default)s)")
    p.add_argument("--stop-file", type=Path, help="stop as soon as this file exists")
    add_client_options(p, timeout=0.25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--key-prefix", help="prefix of every key (default: nm:<random>:, per run)")


def _config(args: argparse.Namespace) -> tuple[LoadConfig, str | None]:
    from netmigrate.bench.load.runner import LoadConfig

    netns = args.netns
    service = None
    keyspace = args.keyspace
    preload_redis = args.preload_redis
    if args.stack is not None:
        from netmigrate.lab.stack import Stack

        stack = Stack.load(args.stack)
        service = stack.service
        keyspace = keyspace if keyspace is not None else stack.keyspace_id
        netns = netns or stack.client_netns
        if args.preload_direct:
            preload_redis = stack.server(stack.default_owner).redis_url
    elif args.preload_direct:
        raise ValueError("--preload-direct needs --stack")
    if args.service:
        host, sep, port = args.service.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--service: want HOST:PORT, got {args.service!r}")
        service = (host, int(port))
    if service is None:
        raise ValueError("give --service or --stack")
    if args.preload < 0 or args.concurrency < 1 or args.duration < 0 or args.value_size < 16:
        raise ValueError("--preload >= 0, --concurrency >= 1, --duration >= 0, --value-size >= 16")
    if not 0 <= args.ttl_fraction <= 1 or args.ttl_ms < 1:
        raise ValueError("--ttl-fraction in [0, 1], --ttl-ms >= 1")
    parse_mix(args.mix)
    keys = args.keys or args.preload or 10_000
    workload = WorkloadConfig(
        keys=keys,
        counters=args.counters,
        value_size=args.value_size,
        mix=args.mix,
        ttl_fraction=args.ttl_fraction,
        ttl_ms=args.ttl_ms,
        seed=args.seed,
        key_prefix=args.key_prefix or f"nm:{secrets.token_hex(3)}:",
    )
    cfg = LoadConfig(
        service=service,
        keyspace=keyspace if keyspace is not None else service[1],
        out=args.out,
        workload=workload,
        preload=args.preload,
        preload_redis=preload_redis,
        concurrency=args.concurrency,
        duration=args.duration,
        stop_file=args.stop_file,
        timeout=args.timeout,
        retries=args.retries,
        deadline=args.deadline,
        # The lab's CPU budgets are read from the stack's run directory, where lab up records
        # them; a load pointed at a bare service has none to read.
        cpu_run_dir=args.cpu_run_dir or args.stack,
        max_datagram=args.max_datagram,
    )
    return cfg, netns


def enter_netns(netns: str) -> None:
    """Move this (still single-threaded) process into ``netns``: every socket it opens from
    now on lives there, while files (a Redis unix socket, the output) stay reachable."""
    from netmigrate.netns import enter_netns

    enter_netns(netns)


def run(args: argparse.Namespace) -> int:
    try:
        cfg, netns = _config(args)
    except ValueError as exc:
        print(f"netmigrate bench load: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # LabError: no stack recorded
        print(f"netmigrate bench load: {exc}", file=sys.stderr)
        return 2
    if netns:
        try:
            enter_netns(netns)
        except OSError as exc:
            print(f"netmigrate bench load: cannot enter namespace {netns}: {exc}", file=sys.stderr)
            return 2
    from netmigrate.bench.load.runner import run_load

    doc = run_load(cfg)
    summary = {
        "ops": doc["ops"],
        "ops_per_s": doc["ops_per_s"],
        "errors": doc["errors_total"],
        "checker_ok": doc["checker"]["ok"],
        "out": str(cfg.out),
    }
    print(json.dumps(summary))
    bad = not doc["checker"]["ok"] or doc["errors_total"]["non_retryable"] > 0
    return 1 if bad else 0
