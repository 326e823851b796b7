"""``netmigrate bench``: run NetMigrate and its peers side by side; write JSON, table and plots.

Subcommands::

    netmigrate bench run --system netmigrate,redis-cluster-tuned --workload B,A \\
        --netmigrate-parallel 64 --netmigrate-batch 512 --out reports/bench-nm
    netmigrate bench run --system redis-cluster,redis-cluster-tuned,stop-and-copy --workload B,A \\
        --records 200000 --value-size 100 --concurrency 16 --duration 30 \\
        --migrate-fraction 0.5 --out reports/bench
    netmigrate bench all --out reports/bench      # the reference run (table of the docs)
    netmigrate bench compare reports/bench [more reports] [--out DIR]
    netmigrate bench overhead --workload B --concurrency 16
    netmigrate bench load --stack /run/netmigrate-lab/nm --preload 100000 --out out/load
    netmigrate bench report --load out/load --migration out/migration.json --out reports/demo
    netmigrate bench agent|copy|switch|gateway|cluster-client [-- their own options]

Exit status: 0 all runs verified, 1 a run failed verification or its migration failed,
2 bad arguments, 3 a requested system is not available here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netmigrate.bench.system import SystemUnavailable, create_system, system_names

#: The reference run behind the table in docs/benchmarks.md (``netmigrate bench all``).
#: Its systems are every one of :data:`REFERENCE_SYSTEMS` that is available here.
REFERENCE_SYSTEMS = ("netmigrate", "redis-cluster", "redis-cluster-tuned", "stop-and-copy")
REFERENCE = {
    "systems": None,
    "workloads": "B,A",
    "records": 200_000,
    "duration": 30.0,
    "concurrency": 16,
}


#: Load-generator processes per run (docs/benchmarks.md, "CPU budgets"): one Python process
#: is bounded by one core and its event loop, so a system whose client budget allows more
#: would otherwise be bounded by its load generator.
DEFAULT_CLIENT_PROCESSES = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


#: NetMigrate migration knobs: (flag, option key, type, help). Their defaults live in
#: netmigrate.bench.peers.netmigrate (importing it here would slow down ``--help``); the
#: help texts name them and a test keeps the two in step.
NETMIGRATE_OPTIONS = (
    ("--netmigrate-parallel", "netmigrate_parallel", _positive_int,
     "NetMigrate: slots in flight at once (default 64)"),
    ("--netmigrate-batch", "netmigrate_batch", _positive_int,
     "NetMigrate: keys per copy batch (default 512)"),
    ("--netmigrate-rate", "netmigrate_rate", _non_negative_int,
     "NetMigrate: copy rate limit in keys/s, 0 = unlimited (default 0)"),
    ("--netmigrate-grace", "netmigrate_grace", _non_negative_float,
     "NetMigrate: seconds between a slot's move and the deletion of its keys at the source; "
     "part of the migration's duration (default 1.0)"),
)  # fmt: skip


def _run_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    p.add_argument(
        "--system",
        default=defaults["systems"],
        help=f"comma-separated systems: {', '.join(system_names())} (default: "
        + (defaults["systems"] or "all of " + ",".join(REFERENCE_SYSTEMS) + " available here")
        + ")",
    )
    p.add_argument(
        "--workload", default=defaults["workloads"],
        help="comma-separated YCSB workloads A,B,C,D,F (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--records", type=_positive_int, default=defaults["records"])
    p.add_argument("--value-size", type=_positive_int, default=100, help="bytes per value")
    p.add_argument("--concurrency", type=_positive_int, default=defaults["concurrency"])
    p.add_argument(
        "--duration", type=_positive_float, default=defaults["duration"],
        help="run phase seconds (extended so --min-after seconds follow the migration)",
    )  # fmt: skip
    p.add_argument("--migrate-fraction", type=float, default=0.5, help="share of the 16384 slots")
    p.add_argument("--migrate-at", type=float, default=None, help="seconds into the run phase")
    p.add_argument("--min-after", type=float, default=None, help="seconds kept after migration")
    p.add_argument("--rate", type=_positive_float, default=None, help="total ops/s (paced)")
    p.add_argument(
        "--client-processes", type=_positive_int, default=DEFAULT_CLIENT_PROCESSES,
        help="load-generator processes of the run phase, all in the 'client' CPU budget "
        "(default %(default)s; 1: the workers run in the harness process)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin-ms", type=_positive_int, default=100)
    p.add_argument("--masters", type=_positive_int, default=2, help="Redis Cluster masters")
    p.add_argument(
        "--cpu", default="default",
        help="per-role CPU budgets (cgroups): 'default', 'off', or HOST=FRACTION,... over the "
        "defaults, as `netmigrate lab up --cpu` (default %(default)s; NetMigrate's lab)",
    )  # fmt: skip
    p.add_argument("--reshard-pipeline", type=_positive_int, default=10,
                   help="redis-cli --cluster-pipeline (keys per MIGRATE)")  # fmt: skip
    p.add_argument("--cluster-reinit-steps", type=int, default=None,
                   help="override redis-py reinitialize_steps (rebuild the topology every Nth "
                   "MOVED; 0: only patch the moved slot). Default: 5 for redis-cluster (redis-py's "
                   "default), 0 for redis-cluster-tuned")  # fmt: skip
    p.add_argument("--cluster-client", choices=("redis-py", "lean"), default=None,
                   help="Redis Cluster load client: redis-py's RedisCluster or the lean "
                   "pipelined hiredis client. Default: redis-py for redis-cluster, lean for "
                   "redis-cluster-tuned")  # fmt: skip
    p.add_argument("--copy-batch", type=_positive_int, default=500,
                   help="stop-and-copy keys per MIGRATE")  # fmt: skip
    for flag, key, kind, text in NETMIGRATE_OPTIONS:
        p.add_argument(flag, dest=key, type=kind, default=None, help=text)
    p.add_argument("--overhead-seconds", type=float, default=5.0,
                   help="harness overhead probe length; 0 skips it")  # fmt: skip
    p.add_argument("--no-verify", action="store_true", help="skip the final read-back sweep")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--out", type=Path, default=Path("reports/bench"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    sub.required = True
    run_p = sub.add_parser("run", help="benchmark systems and write report.json, table, plots")
    _run_arguments(run_p, {
        "systems": "netmigrate,redis-cluster-tuned", "workloads": "B",
        "records": 100_000,
        "duration": 30.0, "concurrency": 16,
    })  # fmt: skip
    all_p = sub.add_parser(
        "all", help="the reference run: workloads B and A, 200,000 keys, every system available"
    )
    _run_arguments(all_p, REFERENCE)
    sweep_p = sub.add_parser(
        "sweep",
        help="equal-speed comparison: NetMigrate rates x Redis Cluster pipelines, then open loop",
    )
    _run_arguments(sweep_p, {**REFERENCE, "systems": None})
    sweep_p.add_argument(
        "--netmigrate-rates", default="0,8000,4000,2000",
        help="NetMigrate copy rate limits in keys/s, 0 = unlimited (default %(default)s)",
    )  # fmt: skip
    sweep_p.add_argument(
        "--cluster-pipelines", default="10,100,1000",
        help="redis-cli --cluster-pipeline values (default %(default)s)",
    )  # fmt: skip
    sweep_p.add_argument(
        "--cluster-system", default="redis-cluster-tuned", help="the Redis Cluster peer"
    )
    sweep_p.add_argument(
        "--open-loop", type=_non_negative_float, default=0.7,
        help="open-loop run of each system at this share of its first run's 'before' ops/s "
        "(0: none; default %(default)s)",
    )  # fmt: skip
    cmp_p = sub.add_parser("compare", help="table and plots from existing report.json files")
    cmp_p.add_argument("reports", nargs="+", type=Path, help="report.json files or their dirs")
    cmp_p.add_argument("--out", type=Path, default=None, help="where to write table.md, plots/")
    cmp_p.add_argument("--no-plots", action="store_true")
    ov_p = sub.add_parser("overhead", help="the load generator alone vs redis-benchmark")
    ov_p.add_argument("--workload", default="B")
    ov_p.add_argument("--records", type=_positive_int, default=100_000)
    ov_p.add_argument("--value-size", type=_positive_int, default=100)
    ov_p.add_argument("--concurrency", type=_positive_int, default=16)
    ov_p.add_argument("--seconds", type=_positive_float, default=5.0)
    ov_p.add_argument("--seed", type=int, default=1)
    for name, (_, text) in MICRO.items():
        micro_p = sub.add_parser(name, help=f"{text} (its own options after --)")
        micro_p.add_argument("micro_args", nargs=argparse.REMAINDER)
    from netmigrate.bench.load import cli as load_cli
    from netmigrate.bench.load import report_cli

    for name, module, text in (
        ("load", load_cli, "client load against a keyspace, with a recorded history"),
        ("report", report_cli, "merge a load run and a migration result into a report"),
    ):
        module.add_arguments(
            sub.add_parser(
                name,
                help=text,
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )


#: Micro-benchmarks of one component: subcommand -> (module with ``main(argv)``, help).
MICRO = {
    "agent": ("netmigrate.bench.micro.agent", "agent requests/s vs redis-benchmark"),
    "copy": ("netmigrate.bench.micro.copy", "slot copy keys/s between two redis-servers"),
    "switch": ("netmigrate.bench.micro.switch", "lab switch frames/s and latency"),
    "gateway": (
        "netmigrate.bench.micro.gateway",
        "redis-benchmark through the RESP gateway vs straight to Redis, on the budgeted lab",
    ),
    "cluster-client": (
        "netmigrate.bench.micro.cluster_client",
        "CPU per operation of the Redis Cluster load clients (lean vs redis-py)",
    ),
}


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _config(args: argparse.Namespace, workload: str) -> Any:
    from netmigrate.bench.runner import RunConfig

    return RunConfig(
        workload=workload,
        records=args.records,
        value_size=args.value_size,
        concurrency=args.concurrency,
        duration_s=args.duration,
        migrate_at_s=args.migrate_at,
        min_after_s=args.min_after,
        migrate_fraction=args.migrate_fraction,
        rate=args.rate,
        client_processes=args.client_processes,
        seed=args.seed,
        bin_ms=args.bin_ms,
        verify=not args.no_verify,
        options={
            "masters": args.masters,
            "cpu": args.cpu,
            "reshard_pipeline": args.reshard_pipeline,
            "copy_batch": args.copy_batch,
            "cluster_reinitialize_steps": args.cluster_reinit_steps,
            "cluster_client": args.cluster_client,
            **{key: getattr(args, key) for _, key, _, _ in NETMIGRATE_OPTIONS},
        },
    )


def _write_outputs(report: dict[str, Any], out: Path, plots: bool) -> list[Path]:
    from netmigrate.bench import table
    from netmigrate.bench.report import write_json

    write_json(report, out / "report.json")
    (out / "table.md").write_text(table.markdown(report))
    written = [out / "report.json", out / "table.md"]
    if plots:
        from netmigrate.bench.plots import plot_report

        written += plot_report(report, out / "plots")
    return written


async def _run(args: argparse.Namespace) -> int:
    from netmigrate.bench import overhead, table
    from netmigrate.bench.progress import Progress
    from netmigrate.bench.report import finish_report, new_report, write_json
    from netmigrate.bench.runner import run_system

    if args.system is None:
        systems = []
        for name in REFERENCE_SYSTEMS:
            try:
                create_system(name)
                systems.append(name)
            except SystemUnavailable as exc:
                print(f"note: skipping {name}: {exc}", file=sys.stderr)
    else:
        systems = _split(args.system)
    workloads = [w.upper() for w in _split(args.workload)]
    if not systems or not workloads:
        print("error: give at least one --system and one --workload", file=sys.stderr)
        return 2
    try:
        configs = {w: _config(args, w) for w in workloads}
        for cfg in configs.values():
            cfg.validate()
        # Instantiate every system first: an unavailable one fails before anything starts.
        first = next(iter(configs.values()))
        for name in systems:
            candidate = create_system(name)
            candidate.validate_slots(first.slots())
            candidate.validate_options(first.options)
    except SystemUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    progress = Progress(enabled=not args.quiet)
    shared = next(iter(configs.values())).as_dict()
    shared.pop("workload")
    shared.update({"systems": systems, "workloads": workloads})
    report = new_report(shared)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overhead_seconds > 0:
        progress.log("measuring harness overhead (load generator vs redis-benchmark)")
        report["harness_overhead"] = await overhead.measure(
            configs[workloads[0]], seconds=args.overhead_seconds
        )
    failed = False
    for w in workloads:
        for name in systems:
            run = await run_system(create_system(name), configs[w], progress)
            report["runs"].append(run)
            ver = run.get("verification")
            if run["migration"].get("error") or (ver is not None and not ver["ok"]):
                failed = True
            write_json(report, args.out / "report.json")  # partial results survive a crash
    finish_report(report)
    written = _write_outputs(report, args.out, plots=not args.no_plots)
    sys.stdout.write(table.terminal(report))
    progress.log("wrote " + ", ".join(str(p) for p in written))
    return 1 if failed else 0


def _compare(args: argparse.Namespace) -> int:
    from netmigrate.bench import table
    from netmigrate.bench.report import load_reports

    try:
        report = load_reports(args.reports)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out
    if out is None:
        first = args.reports[0]
        out = first if first.is_dir() else first.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table.markdown(report))
    if not args.no_plots:
        from netmigrate.bench.plots import plot_report

        plot_report(report, out / "plots")
    sys.stdout.write(table.terminal(report))
    return 0


async def _overhead(args: argparse.Namespace) -> int:
    import json

    from netmigrate.bench import overhead
    from netmigrate.bench.runner import RunConfig

    cfg = RunConfig(
        workload=args.workload,
        records=args.records,
        value_size=args.value_size,
        concurrency=args.concurrency,
        seed=args.seed,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(await overhead.measure(cfg, seconds=args.seconds), indent=1))
    return 0


def _run_until_signal(main: Callable[[argparse.Namespace], Awaitable[int]], args: Any) -> int:
    """Run ``main``; SIGTERM (and Ctrl-C) cancel it so every server is stopped on the way out."""

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await main(args)
        except asyncio.CancelledError:
            print("interrupted: servers stopped; report.json keeps finished runs", file=sys.stderr)
            return 143
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        return 130


async def _sweep(args: argparse.Namespace) -> int:
    from netmigrate.bench import sweep
    from netmigrate.bench.progress import Progress
    from netmigrate.bench.report import finish_report, new_report, write_json
    from netmigrate.bench.runner import run_system

    try:
        rates = [int(x) for x in _split(args.netmigrate_rates)]
        pipelines = [int(x) for x in _split(args.cluster_pipelines)]
        if any(r < 0 for r in rates) or any(p < 1 for p in pipelines) or not (rates or pipelines):
            raise ValueError("rates must be >= 0 and pipelines >= 1, at least one of them")
        workloads = [w.upper() for w in _split(args.workload)]
        configs = {w: _config(args, w) for w in workloads}
        for cfg in configs.values():
            cfg.validate()
        for name in (sweep.NETMIGRATE, args.cluster_system):
            create_system(name).validate_options(next(iter(configs.values())).options)
    except SystemUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(enabled=not args.quiet)
    shared = next(iter(configs.values())).as_dict()
    shared.pop("workload")
    shared.update({
        "systems": [sweep.NETMIGRATE, args.cluster_system], "workloads": workloads,
        "sweep": {"netmigrate_rates": rates, "cluster_pipelines": pipelines,
                  "open_loop": args.open_loop},
    })  # fmt: skip
    report = new_report(shared)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False

    async def one(w: str, point: Any) -> dict[str, Any]:
        nonlocal failed
        cfg = configs[w]
        cfg = dataclasses.replace(
            cfg, rate=point.offered, options={**cfg.options, point.knob: point.value}
        )
        run = await run_system(create_system(point.system), cfg, progress)
        run["sweep"] = point.to_dict()
        report["runs"].append(run)
        ver = run.get("verification")
        if run["migration"].get("error") or (ver is not None and not ver["ok"]):
            failed = True
        write_json(report, args.out / "report.json")
        return run

    # Defaults first, every workload before the next setting: a sweep stopped early (SIGTERM
    # keeps report.json) still holds the comparison that matters most.
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for point in sweep.closed_points(rates, pipelines, args.cluster_system):
        for w in workloads:
            first.setdefault((w, point.system), await one(w, point))
    if args.open_loop > 0:
        for (w, _), run in first.items():
            cap = sweep.capacity(run)
            if cap:
                point = dataclasses.replace(
                    sweep.Point(**{k: v for k, v in run["sweep"].items() if k != "label"}),
                    offered=round(args.open_loop * cap, 1),
                )
                await one(w, point)
    report["sweep"] = sweep.comparison(report["runs"], args.cluster_system)
    finish_report(report)
    written = _write_outputs(report, args.out, plots=not args.no_plots)
    (args.out / "sweep.md").write_text(sweep.markdown(report["runs"]))
    written.append(args.out / "sweep.md")
    if not args.no_plots:
        written.append(sweep.plot(report["runs"], args.out / "sweep.png", args.cluster_system))
    write_json(report, args.out / "report.json")
    sys.stdout.write(sweep.markdown(report["runs"]))
    progress.log("wrote " + ", ".join(str(p) for p in written))
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.bench_command in ("run", "all"):
        return _run_until_signal(_run, args)
    if args.bench_command == "sweep":
        return _run_until_signal(_sweep, args)
    if args.bench_command == "compare":
        return _compare(args)
    if args.bench_command == "overhead":
        return _run_until_signal(_overhead, args)
    if args.bench_command == "load":
        from netmigrate.bench.load import cli as load_cli

        return load_cli.run(args)
    if args.bench_command == "report":
        from netmigrate.bench.load import report_cli

        return report_cli.run(args)
    if args.bench_command in MICRO:
        import importlib

        main = importlib.import_module(MICRO[args.bench_command][0]).main
        rest = args.micro_args
        return int(main(rest[1:] if rest[:1] == ["--"] else rest) or 0)
    raise AssertionError(args.bench_command)
