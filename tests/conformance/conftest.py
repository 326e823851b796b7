"""Session fixtures of the conformance suite: one target, one P4Runtime session, one dataplane.

The target (lab switch by default, BMv2 on request: see ``nmconf_harness``) starts once per
session; between tests the ``sw`` fixture drops queued packets, packet-ins and digests and
restores every slot_map entry the test touched.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nmconf_driver import Conformance
from nmconf_harness import (
    HarnessError,
    P4RTSession,
    PtfTest,
    TargetConfig,
    config_from_env,
    open_dataplane,
)
from nmconf_world import World

from netmigrate.lab import ProcessSpec, Supervisor, Topology, build_topology, down, up
from netmigrate.lab.switch_process import start_switch
from netmigrate.protocol.constants import CPU_PORT

PREFIX_ROOT = "nmt4"


@dataclass(frozen=True, slots=True)
class RunningTarget:
    config: TargetConfig
    grpc_addr: str
    ports: dict[int, tuple[str | None, str]]
    topology: Topology | None


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_bmv2(config: TargetConfig, topo: Topology, run_dir: Path) -> str:
    sock = run_dir / "p4rt.sock"
    # BMv2 runs inside the switch namespace (it opens its ports there); its P4Runtime server
    # listens on a unix socket, which the root namespace reaches through the filesystem.
    argv = [str(config.bmv2_bin), "--device-id", str(config.device_id), "--no-p4"]
    for port, iface in sorted(topo.switch_ports().items()):
        argv += ["-i", f"{port}@{iface}"]
    argv += ["--", "--grpc-server-addr", f"unix:{sock}", "--cpu-port", str(CPU_PORT)]
    spec = ProcessSpec(name="bmv2", argv=tuple(argv), netns=topo.switch_netns)
    Supervisor(run_dir).start(spec, ready=sock.exists, timeout=30)
    return f"unix:{sock}"


@pytest.fixture(scope="session")
def target_config() -> TargetConfig:
    try:
        return config_from_env()
    except HarnessError as exc:
        pytest.fail(f"conformance target: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def running_target(
    target_config: TargetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTarget]:
    if target_config.grpc_addr is not None:
        yield RunningTarget(target_config, target_config.grpc_addr, target_config.ports, None)
        return
    if os.geteuid() != 0:
        pytest.fail("the conformance suite needs root (namespaces, AF_PACKET)", pytrace=False)
    prefix = f"{PREFIX_ROOT}-{secrets.token_hex(2)}"
    topo = build_topology(prefix, bare=True)
    run_dir = tmp_path_factory.mktemp("nmt4-run")
    try:
        up(topo, run_dir)
        if target_config.kind == "lab":
            addr = f"127.0.0.1:{_free_tcp_port()}"
            start_switch(topo, run_dir, grpc_addr=addr, device_id=target_config.device_id)
        else:
            addr = _start_bmv2(target_config, topo, run_dir)
        ports = {h.switch_port: (h.netns, h.iface) for h in topo.hosts}
        yield RunningTarget(target_config, addr, ports, topo)
    finally:
        for name in Supervisor(run_dir).names():
            log = Supervisor(run_dir).log_tail(name, 40)
            print(f"--- {name} log (tail) ---\n{log}")
        down(topo, run_dir)


@pytest.fixture(scope="session")
def world() -> World:
    # The addresses and MACs of the plan are the same whatever the prefix (or an external
    # target's wiring): only the port numbers matter to the switch, and those are 1..4.
    return World()


@pytest.fixture(scope="session")
def p4rt(running_target: RunningTarget, world: World) -> Iterator[P4RTSession]:
    session = P4RTSession(
        running_target.grpc_addr, running_target.config.device_id, running_target.config.p4blob
    )
    try:
        session.insert(world.entities())
        session.configure_digest("slot_transition_t")
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def dataplane(running_target: RunningTarget) -> Iterator[PtfTest]:
    dp = open_dataplane(running_target.ports)
    try:
        yield PtfTest(dp)
    finally:
        dp.kill()


@pytest.fixture
def sw(p4rt: P4RTSession, dataplane: PtfTest, world: World) -> Iterator[Conformance]:
    conf = Conformance(p4rt, dataplane, world)
    conf.reset_queues()
    try:
        yield conf
    finally:
        conf.restore_slots()
        conf.reset_queues()
