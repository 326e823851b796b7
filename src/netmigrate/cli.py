"""The ``netmigrate`` command: a thin dispatcher over per-package command modules.

Each command lives with the package it drives (``netmigrate.agent.cli`` ...) and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the invoked command's module is
imported, so ``netmigrate kv`` does not pay for gRPC or matplotlib, and a core install (no
``netmigrate[bench]`` extra) runs every command but ``bench``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from netmigrate import __version__

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("netmigrate.agent.cli", "run the NetMigrate agent of one Redis instance"),
    "agent-stats": ("netmigrate.agent.stats_cli", "print an agent's counters"),
    "kv": ("netmigrate.client.cli", "send one request to a keyspace"),
    "gateway": (
        "netmigrate.gateway.cli",
        "a local RESP server for unmodified Redis clients, in front of a keyspace",
    ),
    "switch": ("netmigrate.switch.cli", "run the lab switch (P4Runtime server + data plane)"),
    "gen-p4-constants": ("netmigrate.p4rt.gen_constants", "write p4/include/constants.p4"),
    "lab": ("netmigrate.lab.cli", "bring the local lab of namespaces up or down"),
    "testbed": ("netmigrate.testbed.cli", "fresh Debian hosts under systemd-nspawn, up or down"),
    "migrate": ("netmigrate.migration.cli", "migrate slots between servers"),
    "bench": (
        "netmigrate.bench.cli",
        "benchmarks and client load: YCSB runs, load with a history, reports, micro-benchmarks",
    ),
}

#: Top-level modules of the ``bench`` extra (pyproject.toml): a core install lacks them.
BENCH_EXTRA = frozenset({"hdrh", "matplotlib", "numpy", "PIL"})


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netmigrate",
        description="Live migration of Redis shards steered by a programmable switch.",
    )
    p.add_argument("--version", action="version", version=f"netmigrate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    try:
        return _dispatch(name, rest)
    except ModuleNotFoundError as exc:
        if exc.name not in BENCH_EXTRA:
            raise
        print(
            f"netmigrate {name}: needs {exc.name}, part of the bench extra: "
            "pip install 'netmigrate[bench]'",
            file=sys.stderr,
        )
        return 2


def _dispatch(name: str, rest: list[str]) -> int:
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"netmigrate {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
