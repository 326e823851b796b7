"""``netmigrate switch``: the lab switch process (P4Runtime server + data plane).

The process runs where it is started (normally the root namespace, so P4Runtime listens on
127.0.0.1 there or on a unix socket) and opens its ports inside ``--netns``. It is ready once
the P4Runtime address accepts connections, and then prints one line
``netmigrate-switch ready grpc=ADDR`` on stdout (with the real port when 0 was asked).
SIGTERM or SIGINT stop it cleanly: gRPC drains, sockets close, the pid file and unix
sockets it created are removed.

Ports are ``--port N=IFACE`` (N in 1..510, not the CPU port). Faults are
``--fault PORT:drop=P,delay_ms=D`` and can be changed at run time through
``--control-socket`` (see :mod:`netmigrate.switch.control`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
from finsy.proto import p4r_grpc

from netmigrate.netns import NetnsError
from netmigrate.protocol.constants import CPU_PORT
from netmigrate.resources import p4info_path
from netmigrate.switch import pipeline
from netmigrate.switch.control import ControlServer
from netmigrate.switch.dataplane import Dataplane
from netmigrate.switch.faults import Fault, FaultError, parse_fault
from netmigrate.switch.p4runtime_server import P4RuntimeService
from netmigrate.switch.ports import PortError, open_ports
from netmigrate.switch.runtime import SwitchRuntime
from netmigrate.switch.tls import TlsError, TlsFiles, server_credentials

log = logging.getLogger("netmigrate.switch")

READY_PREFIX = "netmigrate-switch ready"
MAX_PORT = (1 << 9) - 2
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # A second switch on the same address must fail, not share the port silently.
    ("grpc.so_reuseport", 0),
]


class UsageError(ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--netns", help="network namespace holding the port interfaces")
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="N=IFACE",
        help="switch port number N is interface IFACE (repeat)",
    )
    parser.add_argument(
        "--grpc-addr",
        default="127.0.0.1:9559",
        help="P4Runtime address: HOST:PORT (port 0 picks one) or unix:/path",
    )
    parser.add_argument("--device-id", type=int, default=1, help="P4Runtime device id")
    parser.add_argument("--cpu-port", type=int, default=CPU_PORT, help="packet-in/out port")
    parser.add_argument("--tls-cert", type=Path, help="PEM server certificate (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM server private key")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that client certificates need")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="PORT:drop=P,delay_ms=D",
        help="egress fault injection on a port (repeat)",
    )
    parser.add_argument("--control-socket", type=Path, help="unix socket for run-time faults")
    parser.add_argument(
        "--no-rings",
        action="store_true",
        help="one recv/send call per frame instead of PACKET_MMAP rings (slower)",
    )
    parser.add_argument("--pid-file", type=Path, help="write the process id here")
    parser.add_argument(
        "--p4info", type=Path, help="P4Info of the pipeline (default: the committed one)"
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="event loop: uvloop when installed (auto), or asyncio's",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )


def parse_ports(items: list[str], cpu_port: int) -> dict[int, str]:
    ports: dict[int, str] = {}
    for item in items:
        num, sep, iface = item.partition("=")
        if not sep or not num.strip().isdigit() or not iface.strip():
            raise UsageError(f"--port {item!r}: want N=IFACE")
        n = int(num)
        if not 0 < n <= MAX_PORT or n == cpu_port:
            raise UsageError(f"--port {item!r}: N must be in 1..{MAX_PORT} and not the CPU port")
        if n in ports:
            raise UsageError(f"--port {n} given twice")
        if iface in ports.values():
            raise UsageError(f"interface {iface} given for two ports")
        ports[n] = iface.strip()
    return ports


def parse_faults(items: list[str], ports: dict[int, str]) -> dict[int, Fault]:
    faults: dict[int, Fault] = {}
    for item in items:
        port, fault = parse_fault(item)
        if port not in ports:
            raise UsageError(f"--fault {item!r}: port {port} is not a --port")
        faults[port] = fault
    return faults


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_ca is not None:
            raise UsageError("--tls-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def _run_loop(coro, loop: str) -> int:
    """Run on uvloop when it is installed (cheaper wakeups on the packet path), else asyncio."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if not 0 <= args.cpu_port <= MAX_PORT + 1:
            raise UsageError(f"--cpu-port must be in 0..{MAX_PORT + 1}")
        ports = parse_ports(args.port, args.cpu_port)
        faults = parse_faults(args.fault, ports)
        tls = tls_files(args)
        if ports and args.netns is None:
            log.warning("no --netns: the ports are opened in this process's namespace")
    except (UsageError, FaultError, TlsError) as exc:
        print(f"netmigrate switch: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_loop(_serve(args, ports, faults, tls), args.loop)
    except (PortError, NetnsError, TlsError, RuntimeError, OSError) as exc:
        print(f"netmigrate switch: {exc}", file=sys.stderr)
        return 1


async def _serve(
    args: argparse.Namespace, port_spec: dict[int, str], faults: dict[int, Fault], tls
) -> int:
    loop = asyncio.get_running_loop()
    runtime = SwitchRuntime(
        args.p4info or p4info_path(),
        device_id=args.device_id,
        cpu_port=args.cpu_port,
        initial_defaults=getattr(pipeline, "INITIAL_DEFAULT_ACTIONS", None),
    )
    ports = open_ports(port_spec, args.netns, rings=not args.no_rings)
    dataplane = Dataplane(runtime, ports, pipeline.process, pipeline.process_packet_out, faults)
    service = P4RuntimeService(runtime)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    p4r_grpc.add_P4RuntimeServicer_to_server(service, server)
    control = ControlServer(args.control_socket, dataplane) if args.control_socket else None
    unix_path = args.grpc_addr[5:] if args.grpc_addr.startswith("unix:") else None
    pid_written = False
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        dataplane.start(loop)
        if control is not None:
            await control.start()
        if unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_path)
        if tls is not None:
            bound = server.add_secure_port(args.grpc_addr, server_credentials(tls))
        else:
            bound = server.add_insecure_port(args.grpc_addr)
        if not bound:
            raise RuntimeError(f"cannot listen on {args.grpc_addr}")
        await server.start()
        if args.pid_file:
            args.pid_file.write_text(f"{os.getpid()}\n")
            pid_written = True
        addr = args.grpc_addr if unix_path else f"{args.grpc_addr.rpartition(':')[0]}:{bound}"
        log.info(
            "P4Runtime on %s%s, device id %d, cpu port %d, ports %s, loop %s",
            addr,
            " (TLS)" if tls else "",
            args.device_id,
            args.cpu_port,
            {n: p.ifname for n, p in ports.items()} or "none",
            type(loop).__module__.split(".")[0],
        )
        print(f"{READY_PREFIX} grpc={addr}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop(grace=1.0)
        dataplane.close()
        if control is not None:
            await control.close()
        if unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_path)
        if pid_written:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if int(args.pid_file.read_text()) == os.getpid():
                    args.pid_file.unlink()
    return 0
