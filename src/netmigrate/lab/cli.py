"""``netmigrate lab up|down|status``: the local lab of namespaces (needs root)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from netmigrate.lab import cgroups, lab
from netmigrate.lab.errors import LabError
from netmigrate.lab.netns import in_netns
from netmigrate.lab.stack import StackConfig, stack_down, stack_up
from netmigrate.lab.switch_process import (
    DEFAULT_DEVICE_ID,
    SWITCH_SERVICE,
    SwitchTls,
    parse_grpc_addr,
    start_switch,
)
from netmigrate.lab.topology import (
    DEFAULT_HOSTS,
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    Topology,
    build_topology,
    lab_ports,
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace prefix (default nm)")
    p.add_argument(
        "--hosts",
        default=",".join(DEFAULT_HOSTS),
        help="comma-separated host names, in switch port order (default %(default)s)",
    )
    p.add_argument("--subnet", default=DEFAULT_SUBNET)
    p.add_argument("--mtu", type=int, default=LAB_MTU)
    p.add_argument(
        "--bare", action="store_true", help="no IPv4 configuration on the hosts (test harnesses)"
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="pid, log and state files (default /run/netmigrate-lab/<prefix>)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


_CPU_HELP = (
    "per-host CPU budgets in shares of one core: 'off', 'default', or HOST=FRACTION,... over "
    "the defaults (HOST: a lab host, 'switch' or 'controller'; defaults: switch "
    f"{cgroups.DEFAULT_SWITCH}, first host (client) {cgroups.DEFAULT_CLIENT}, other hosts "
    f"{cgroups.DEFAULT_SERVER}, controller {cgroups.DEFAULT_CONTROLLER}; they must sum to at "
    "most the machine's cores). Not given: a new lab gets the defaults, a running lab keeps "
    "its budgets"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser(
        "up",
        help="create the lab (idempotent)",
        description="Create or repair the lab topology (and with --full the whole stack).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(up)
    up.add_argument(
        "--with-switch",
        action="store_true",
        help="also start `netmigrate switch` in the switch namespace with every port",
    )
    up.add_argument(
        "--full",
        action="store_true",
        help="the whole stack (switch configured, redis-server + agent per Redis host, "
        "keyspace 10.0.1.1:50000 owned by the first Redis host); the first host is the client",
    )
    up.add_argument(
        "--control-base",
        type=int,
        help="--full: agent n's control service is 127.0.0.1:<base+n> (default: derived from "
        "the prefix, 17000 for nm)",
    )
    up.add_argument(
        "--grpc-addr",
        help="the switch's P4Runtime (default: 127.0.0.1 and a port derived from the prefix, "
        "9559 for nm, so labs of different prefixes run side by side)",
    )
    up.add_argument("--device-id", type=int, default=DEFAULT_DEVICE_ID)
    tls = up.add_argument_group(
        "P4Runtime TLS (--with-switch)",
        # Broken by hand: the parser keeps its descriptions as written (the epilog's layout).
        "mutual TLS on the switch's P4Runtime server, as the switch roles serve it; off unless\n"
        "all three are given. The switch reads the files by name; the key must be private\n"
        "(mode 0600). New material in the files restarts the switch.",
    )
    tls.add_argument(
        "--switch-tls-cert", type=Path, metavar="FILE", help="the switch's server certificate"
    )
    tls.add_argument("--switch-tls-key", type=Path, metavar="FILE", help="its private key")
    tls.add_argument(
        "--switch-tls-ca",
        type=Path,
        metavar="FILE",
        help="the CA whose certificates clients must present",
    )
    up.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="PORT:drop=P,delay_ms=D",
        help="fault injection passed to the switch (repeatable)",
    )
    up.add_argument("--cpu", metavar="off|default|HOST=FRACTION,...", help=_CPU_HELP)
    up.add_argument(
        "--cpu-period-us",
        type=int,
        help=f"CFS period of every budget in microseconds (default {cgroups.DEFAULT_PERIOD_US}, "
        "longer on a machine too small for 1 ms quotas)",
    )
    down = sub.add_parser(
        "down",
        help="remove everything the lab made",
        description="Stop the lab's processes, delete its namespaces, cgroups and files.",
    )
    _common(down)
    status = sub.add_parser(
        "status",
        help="what exists of the lab (exit 3 when not up)",
        description="What exists of the lab: namespaces, links, processes, CPU budgets.",
    )
    _common(status)
    run = sub.add_parser(
        "exec",
        help="run a command on a lab host (its namespace and CPU budget)",
        description="Run COMMAND inside HOST's namespace and in HOST's CPU budget (when the "
        "lab has budgets). HOST 'controller' runs in the root namespace under the controller's "
        "budget (Ansible, `netmigrate migrate`); 'switch' is the switch namespace.",
    )
    _common(run)
    run.add_argument("host", metavar="HOST")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")


def _topology(args: argparse.Namespace) -> Topology:
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    topology = build_topology(args.prefix, hosts, subnet=args.subnet, mtu=args.mtu, bare=args.bare)
    if args.action == "up":
        ports = lab_ports(topology.prefix)
        if args.grpc_addr is None:
            args.grpc_addr = f"127.0.0.1:{ports.p4runtime}"
        if args.control_base is None:
            args.control_base = ports.control_base
    return topology


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
        if args.action == "exec":
            return _exec(args, topology, run_dir)
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
        mtu=topology.mtu,
        subnet=topology.subnet,
    )


def _switch_tls(args: argparse.Namespace) -> SwitchTls | None:
    """The three TLS files together or none (a server that admits any client would protect
    nothing: the roles always ask for client certificates too)."""
    files = (args.switch_tls_cert, args.switch_tls_key, args.switch_tls_ca)
    if not any(files):
        return None
    if not all(files):
        raise LabError("--switch-tls-cert, --switch-tls-key and --switch-tls-ca go together")
    if args.full:
        raise LabError(
            "--switch-tls-* is for --with-switch: --full configures its switch itself in plain "
            "text on 127.0.0.1"
        )
    if not args.with_switch:
        raise LabError("--switch-tls-* needs --with-switch")
    tls = SwitchTls(args.switch_tls_cert, args.switch_tls_key, args.switch_tls_ca)
    tls.check()
    return tls


def _cpu(args: argparse.Namespace, topology: Topology, run_dir: Path) -> Any:
    """``--cpu`` as :func:`netmigrate.lab.lab.up` takes it; parsed before anything changes."""
    spec = args.cpu
    if spec is None:
        if lab.load_topology(run_dir) is not None:
            return lab.KEEP_CPU
        spec = "default"
    return cgroups.parse_cpu(spec, topology.host_names, period_us=args.cpu_period_us)


def _exec(args: argparse.Namespace, topology: Topology, run_dir: Path) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("exec needs a command: netmigrate lab exec HOST -- COMMAND ...")
    recorded = lab.load_topology(run_dir) or topology
    host = args.host
    if host == cgroups.CONTROLLER:
        netns = None
    elif host == cgroups.SWITCH:
        netns = recorded.switch_netns
    else:
        netns = recorded.host(host).netns
    state = cgroups.load(run_dir)
    if state is not None and host in state.shares:
        cgroups.join(state, host)
    argv = in_netns(netns, command)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    return 1  # not reached


def _up(args: argparse.Namespace, topology: Topology, run_dir: Path) -> int:
    # Checked before anything changes, as --cpu is.
    tls = _switch_tls(args)
    cpu = _cpu(args, topology, run_dir)
    if args.full:
        if args.bare or len(topology.hosts) < 2:
            raise LabError("--full needs a client and at least one Redis host, not --bare")
        stack = stack_up(dataclasses.replace(_stack_config(args, topology, run_dir), cpu=cpu))
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
    result = lab.up(topology, run_dir, cpu=cpu)
    if args.with_switch:
        started = start_switch(
            topology,
            run_dir,
            grpc_addr=args.grpc_addr,
            device_id=args.device_id,
            faults=args.fault,
            tls=tls,
        )
        if started.changed:
            how = " (mutual TLS)" if tls is not None else ""
            result.did(f"started {SWITCH_SERVICE} (pid {started.pid}) on {args.grpc_addr}{how}")
    budgets = cgroups.load(run_dir)
    doc = {
        "changed": result.changed,
        "actions": result.actions,
        "topology": topology.to_dict(),
        "cpu": None if budgets is None else budgets.to_dict(),
    }
    lines = [*result.actions]
    for h in topology.hosts:
        lines.append(
            f"{h.name:10} ns={h.netns} ip={h.ip} mac={h.mac} "
            f"switch port {h.switch_port} ({topology.switch_netns}:{h.switch_iface})"
        )
    lines.append(_cpu_line(budgets))
    lines.append(f"changed={str(result.changed).lower()}")
    _emit(args, doc, lines)
    return 0


def _cpu_line(budgets: cgroups.LabCpu | None) -> str:
    if budgets is None:
        return "cpu budgets: off"
    shares = " ".join(f"{h}={f:g}" for h, f in budgets.shares.items())
    return f"cpu budgets ({budgets.backend}, period {budgets.period_us} us): {shares}"


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
        if proc.get("adopted"):
            state += ", restarted outside the lab and tracked again"
        lines.append(f"  process {name} [{proc['program']} in {where}]: {state}")
    usage = cgroups.read_usage(run_dir)
    st["cpu"] = usage
    if usage is None:
        lines.append("  cpu budgets: off")
    else:
        for name, h in usage["hosts"].items():
            lines.append(
                f"  cpu {name}: {h['share']:g} core ({h['quota_us']} us / {h['period_us']} us), "
                f"used {h['usage_s']:.2f} s, throttled {h['nr_throttled']} times"
            )
    _emit(args, st, lines)
    return 0 if st["up"] else EXIT_NOT_UP
