"""Start and stop the lab switch (``netmigrate switch``) on a lab topology.

The switch process runs in the root namespace, so that its P4Runtime server listens on
127.0.0.1 there or on a unix socket (DESIGN section 8); it opens its AF_PACKET ports inside the
switch namespace itself (``--netns``). All ports of the topology are given, numbered as the
topology plans.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from netmigrate.lab.cgroups import SWITCH
from netmigrate.lab.errors import LabError
from netmigrate.lab.supervise import ProcessSpec, StartResult, Supervisor, tcp_ready, unix_ready
from netmigrate.lab.topology import Topology
from netmigrate.protocol.constants import CPU_PORT

SWITCH_SERVICE = "switch"
DEFAULT_GRPC_ADDR = "127.0.0.1:9559"
#: finsy's default device id; BMv2 uses 0 (DESIGN section 2).
DEFAULT_DEVICE_ID = 1


def parse_grpc_addr(addr: str) -> tuple[str, int] | Path:
    """``HOST:PORT`` -> (host, port); ``unix:/path`` -> the socket's path."""
    if addr.startswith("unix:"):
        path = Path(addr.removeprefix("unix:").removeprefix("//"))
        if not path.is_absolute():
            raise LabError(f"invalid gRPC address {addr!r}: want unix:/absolute/path")
        return path
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LabError(f"invalid gRPC address {addr!r}: want HOST:PORT or unix:/path")
    return host.strip("[]"), int(port)


def switch_spec(
    topology: Topology,
    *,
    grpc_addr: str = DEFAULT_GRPC_ADDR,
    device_id: int = DEFAULT_DEVICE_ID,
    cpu_port: int = CPU_PORT,
    faults: Sequence[str] = (),
    name: str = SWITCH_SERVICE,
) -> ProcessSpec:
    """The command line of the lab switch serving every port of ``topology``."""
    parse_grpc_addr(grpc_addr)
    argv = [sys.executable, "-m", "netmigrate.cli", "switch", "--netns", topology.switch_netns]
    for port, iface in sorted(topology.switch_ports().items()):
        argv += ["--port", f"{port}={iface}"]
    argv += ["--grpc-addr", grpc_addr, "--device-id", str(device_id), "--cpu-port", str(cpu_port)]
    for fault in faults:
        argv += ["--fault", fault]
    # It lives in the root namespace but is the switch host: it runs on the switch's budget.
    return ProcessSpec(name=name, argv=tuple(argv), cpu_host=SWITCH)


def switch_available() -> bool:
    return importlib.util.find_spec("netmigrate.switch.cli") is not None


def start_switch(
    topology: Topology,
    run_dir: Path | str,
    *,
    grpc_addr: str = DEFAULT_GRPC_ADDR,
    device_id: int = DEFAULT_DEVICE_ID,
    cpu_port: int = CPU_PORT,
    faults: Sequence[str] = (),
    timeout: float = 30.0,
) -> StartResult:
    """Ensure the lab switch runs (idempotent); returns once its P4Runtime port accepts."""
    if not switch_available():
        raise LabError("the lab switch is not installed (no module netmigrate.switch.cli)")
    spec = switch_spec(
        topology, grpc_addr=grpc_addr, device_id=device_id, cpu_port=cpu_port, faults=faults
    )
    where = parse_grpc_addr(grpc_addr)
    ready = unix_ready(where) if isinstance(where, Path) else tcp_ready(*where)
    return Supervisor(run_dir).start(spec, ready=ready, timeout=timeout)


def stop_switch(run_dir: Path | str) -> bool:
    return Supervisor(run_dir).stop(SWITCH_SERVICE)
