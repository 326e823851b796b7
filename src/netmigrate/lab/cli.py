"""``netmigrate lab up|down|status``: the local lab of namespaces (needs root)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from netmigrate.lab import lab
from netmigrate.lab.errors import LabError
from netmigrate.lab.stack import StackConfig, stack_down, stack_up
from netmigrate.lab.switch_process import (
    DEFAULT_DEVICE_ID,
    DEFAULT_GRPC_ADDR,
    SWITCH_SERVICE,
    parse_grpc_addr,
    start_switch,
)
from netmigrate.lab.topology import (
    DEFAULT_HOSTS,
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    Topology,
    build_topology,
)
from netmigrate.protocol.constants import LAB_MTU

#: ``status`` exit code when the lab is not (completely) up, as ``systemctl status`` does.
EXIT_NOT_UP = 3

_EPILOG = """\
topology: one namespace per host (<prefix>-<host>) plus <prefix>-sw for the switch; host i
(0-based, in --hosts order) is switch port i+1 and has address 10.0.0.(10+i)/24 (client
10.0.0.10, redisN 10.0.0.1N) on eth0, MAC 02:4e:4d:00:00:<10+i>; the switch side of port p is
s<p>-<host> with MAC 02:4e:4d:ff:00:<p>. The gateway 10.0.0.1 and every peer are permanent
neighbours pointing to the switch port. `up` prints the full plan with --json.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace prefix (default nm)")
    parser.add_argument(
        "--hosts",
        default=",".join(DEFAULT_HOSTS),
        help="comma-separated host names, in switch port order (default %(default)s)",
    )
    parser.add_argument("--subnet", default=DEFAULT_SUBNET)
    parser.add_argument("--mtu", type=int, default=LAB_MTU)
    parser.add_argument(
        "--bare", action="store_true", help="no IPv4 configuration on the hosts (test harnesses)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="pid, log and state files (default /run/netmigrate-lab/<prefix>)",
    )
    parser.add_argument(
        "--with-switch",
        action="store_true",
        help="up: also start `netmigrate switch` in the switch namespace with every port",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="up: the whole stack (switch configured, redis-server + agent per Redis host, "
        "keyspace 10.0.1.1:50000 owned by the first Redis host); the first host is the client",
    )
    parser.add_argument(
        "--control-base",
        type=int,
        default=17000,
        help="--full: agent n's control service is 127.0.0.1:<base+n> (default %(default)s)",
    )
    parser.add_argument("--grpc-addr", default=DEFAULT_GRPC_ADDR, help="the switch's P4Runtime")
    parser.add_argument("--device-id", type=int, default=DEFAULT_DEVICE_ID)
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="PORT:drop=P,delay_ms=D",
        help="fault injection passed to the switch (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _topology(args: argparse.Namespace) -> Topology:
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    return build_topology(args.prefix, hosts, subnet=args.subnet, mtu=args.mtu, bare=args.bare)


def _emit(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("netmigrate lab: needs root (network namespaces)", file=sys.stderr)
        return 1
    try:
        topology = _topology(args)
        run_dir = args.run_dir or lab.default_run_dir(topology.prefix)
        if args.action == "up":
            return _up(args, topology, run_dir)
        if args.action == "down":
            names = topology.host_names
            result = stack_down(
                StackConfig(
                    prefix=topology.prefix,
                    client_host=names[0],
                    redis_hosts=tuple(names[1:]),
                    run_dir=run_dir,
                )
            )
            _emit(
                args,
                {"changed": result.changed, "actions": result.actions},
                [*result.actions, f"changed={str(result.changed).lower()}"],
            )
            return 0
        return _status(args, topology, run_dir)
    except LabError as exc:
        print(f"netmigrate lab {args.action}: {exc}", file=sys.stderr)
        return 1


def _stack_config(args: argparse.Namespace, topology: Topology, run_dir: Path) -> StackConfig:
    names = topology.host_names
    where = parse_grpc_addr(args.grpc_addr)
    if isinstance(where, Path) or where[0] != "127.0.0.1":
        raise LabError("--full serves P4Runtime on 127.0.0.1:PORT (give --grpc-addr so)")
    return StackConfig(
        prefix=topology.prefix,
        client_host=names[0],
        redis_hosts=tuple(names[1:]),
        run_dir=run_dir,
        grpc_port=where[1],
        control_base=args.control_base,
        device_id=args.device_id,
        faults=tuple(args.fault),
    )


def _up(args: argparse.Namespace, topology: Topology, run_dir: Path) -> int:
    if args.full:
        if args.bare or len(topology.hosts) < 2:
            raise LabError("--full needs a client and at least one Redis host, not --bare")
        stack = stack_up(_stack_config(args, topology, run_dir))
        lines = [*stack.actions]
        for srv in stack.servers:
            lines.append(
                f"server {srv.server_id} {srv.name:8} data {srv.data} control {srv.control} "
                f"redis {srv.redis_url}"
            )
        lines.append(
            f"service {stack.service_ip}:{stack.service_port} keyspace {stack.keyspace_id} "
            f"(client namespace {stack.client_netns}), P4Runtime {stack.p4runtime}"
        )
        lines.append(f"changed={str(stack.changed).lower()}")
        _emit(args, stack.to_dict(), lines)
        return 0
    result = lab.up(topology, run_dir)
    if args.with_switch:
        started = start_switch(
            topology,
            run_dir,
            grpc_addr=args.grpc_addr,
            device_id=args.device_id,
            faults=args.fault,
        )
        if started.changed:
            result.did(f"started {SWITCH_SERVICE} (pid {started.pid}) on {args.grpc_addr}")
    doc = {"changed": result.changed, "actions": result.actions, "topology": topology.to_dict()}
    lines = [*result.actions]
    for h in topology.hosts:
        lines.append(
            f"{h.name:10} ns={h.netns} ip={h.ip} mac={h.mac} "
            f"switch port {h.switch_port} ({topology.switch_netns}:{h.switch_iface})"
        )
    lines.append(f"changed={str(result.changed).lower()}")
    _emit(args, doc, lines)
    return 0


def _status(args: argparse.Namespace, topology: Topology, run_dir: Path) -> int:
    recorded = lab.load_topology(run_dir)
    st = lab.status(recorded or topology, run_dir)
    lines = [f"lab {st['prefix']}: {'up' if st['up'] else 'not up'} (run dir {st['run_dir']})"]
    for ns, exists in st["namespaces"].items():
        lines.append(f"  namespace {ns}: {'present' if exists else 'missing'}")
    for key, link in st["links"].items():
        if not link["exists"]:
            lines.append(f"  link {key}: missing")
        else:
            offload = "on (!)" if link["tx_offload"] else "off"
            state = "up" if link["up"] else "down"
            lines.append(f"  link {key}: {state} mtu {link['mtu']} tx-offload {offload}")
    for name, host in st["hosts"].items():
        lines.append(f"  host {name}: {'configured' if host['configured'] else 'incomplete'}")
    for name, proc in st["processes"].items():
        where = proc["netns"] or "root namespace"
        state = f"running (pid {proc['pid']})" if proc["running"] else "not running"
        lines.append(f"  process {name} [{proc['program']} in {where}]: {state}")
    _emit(args, st, lines)
    return 0 if st["up"] else EXIT_NOT_UP
