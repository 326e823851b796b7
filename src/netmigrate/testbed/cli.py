"""``netmigrate testbed up|down|status``: fresh Debian hosts under systemd-nspawn (needs root)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netmigrate.lab.errors import LabError
from netmigrate.testbed import harness
from netmigrate.testbed.errors import TestbedError
from netmigrate.testbed.network import DEFAULT_MGMT_SUBNET
from netmigrate.testbed.template import DEFAULT_CACHE_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument(
        "--prefix", default=harness.DEFAULT_PREFIX, help="names of hosts, namespaces, bridge"
    )
    parser.add_argument(
        "--state-root", type=Path, default=harness.DEFAULT_STATE_ROOT,
        help="where hosts' overlays, keys and the inventory live (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--mgmt-subnet", default=DEFAULT_MGMT_SUBNET,
        help="management network (bridge, SSH, NAT); one per testbed (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
        help="where the template tree is cached (default %(default)s)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.action == "up":
            out = harness.up(
                args.prefix,
                state_root=args.state_root,
                cache_dir=args.cache_dir,
                mgmt_subnet=args.mgmt_subnet,
                log=log,
            )
            print(json.dumps(out, indent=2))
        elif args.action == "down":
            done = harness.down(args.prefix, state_root=args.state_root, log=log)
            print(json.dumps({"done": done}, indent=2))
        else:
            out = harness.status(args.prefix, state_root=args.state_root)
            print(json.dumps(out, indent=2))
            return 0 if out["up"] else 3
    except (TestbedError, LabError) as exc:
        print(f"netmigrate testbed {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
