"""The whole local lab as one idempotent step: topology, switch, Redis, agents (DESIGN s. 8).

:func:`stack_up` brings up, or repairs, everything a migration needs on one machine:

* the namespaces and veths of :mod:`netmigrate.lab.lab` (``<prefix>-sw``, ``-client``,
  ``-redis1..3``);
* the lab switch (``netmigrate switch``) in the root namespace with its P4Runtime server on
  127.0.0.1 and a fault-injection control socket in the run directory;
* the pipeline and the forwarding state: an ``ipv4_lpm`` /32 route per host, and for every
  Redis host the ``server_port`` / ``server_rewrite`` / ``sender_check`` entries and a clone
  session (built by :func:`netmigrate.lab.forwarding.netmigrate_entries`, the same builder the
  switch tests use), plus one ``keyspace`` entry;
* a real ``redis-server`` (cluster-enabled, reachable on a unix socket in the run directory
  and on 127.0.0.1:6379 inside its namespace) and a ``netmigrate agent`` per Redis host;
* when this call (re)started the switch, its slot map and the slots' transition epochs from
  the agents (:func:`netmigrate.migration.reconcile`): a restart loses both;
* a TCP forwarder per agent so a controller in the root namespace reaches the agent's gRPC
  control service on ``127.0.0.1:<control_base + server id>``; the same address works inside
  every Redis namespace too (a forwarder there reaches the agent through the switch), so the
  controller can hand it to the peer agent.

**Service address.** Clients send to ``10.0.1.1:50000``, outside the hosts' /24: a host routes
it to its default gateway, i.e. into the switch, whose ``keyspace`` table catches it and steers
each request to its slot's owner (rewriting MAC, IP and port). Replies come back from the
server's own address; the client library matches them by request id, not by source.
``redis1`` is the keyspace's default owner and owns all 16384 slots at first; the other agents
own none.

Every process runs under :class:`~netmigrate.lab.supervise.Supervisor`, so a second
``stack_up`` changes nothing, and :func:`stack_down` removes everything (it is
:func:`netmigrate.lab.lab.down`, which stops every supervised process of the run directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from netmigrate.lab import lab
from netmigrate.lab.cgroups import CpuBudgets
from netmigrate.lab.errors import LabError
from netmigrate.lab.forwarding import DEVICE_CONFIG, LabServer, netmigrate_entries
from netmigrate.lab.supervise import ProcessSpec, Supervisor, tcp_ready, unix_ready
from netmigrate.lab.switch_process import DEFAULT_DEVICE_ID, SWITCH_SERVICE, switch_spec
from netmigrate.lab.topology import (
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    Topology,
    build_topology,
)
from netmigrate.protocol.constants import LAB_MTU, SERVICE_PORT_BASE, SLOT_COUNT
from netmigrate.protocol.path_mtu import datagram_limit

STACK_FILE = "stack.json"
DEFAULT_SERVICE_IP = "10.0.1.1"
#: The keyspace id is the service port (the convention of the protocol header).
DEFAULT_KEYSPACE = SERVICE_PORT_BASE
#: Agents' UDP data port (inside each Redis namespace): the switch rewrites requests to it.
AGENT_UDP_PORT = SERVICE_PORT_BASE + 1
AGENT_CONTROL_PORT = 7000
REDIS_PORT = 6379
#: ``netmigrate gateway`` on the client host: unmodified Redis clients there connect to it.
GATEWAY_PORT = 6379
DEFAULT_GRPC_PORT = 9559
#: The root-namespace forwarder of server ``n``'s control service listens on base + n.
DEFAULT_CONTROL_BASE = 17000
ELECTION_ID = 10


@dataclass(frozen=True, slots=True)
class StackConfig:
    prefix: str = DEFAULT_PREFIX
    redis_hosts: tuple[str, ...] = ("redis1", "redis2", "redis3")
    client_host: str = "client"
    run_dir: Path | None = None
    grpc_port: int = DEFAULT_GRPC_PORT
    control_base: int = DEFAULT_CONTROL_BASE
    device_id: int = DEFAULT_DEVICE_ID
    service_ip: str = DEFAULT_SERVICE_IP
    keyspace_id: int = DEFAULT_KEYSPACE
    #: Egress faults passed to the switch at start, ``PORT:drop=P,delay_ms=D``.
    faults: tuple[str, ...] = ()
    #: Extra agent options (e.g. ``("--log-level", "DEBUG")``).
    agent_args: tuple[str, ...] = ()
    #: Per-host CPU budgets (:func:`netmigrate.lab.lab.up`'s ``cpu``): keep the lab's by default.
    cpu: CpuBudgets | Literal["keep"] | None = lab.KEEP_CPU
    #: The data links' MTU and subnet: the agents' largest datagram derives from the MTU.
    mtu: int = LAB_MTU
    subnet: str = DEFAULT_SUBNET

    def topology(self) -> Topology:
        return build_topology(
            self.prefix, (self.client_host, *self.redis_hosts), subnet=self.subnet, mtu=self.mtu
        )

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir is not None else lab.default_run_dir(self.prefix)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    server_id: int
    netns: str
    ip: str
    switch_port: int
    #: UDP data address of the agent (what the switch rewrites requests to).
    data: str
    #: How other agents reach this agent's control service (inside the lab network).
    control_lab: str
    #: How a controller in the root namespace reaches it (the forwarder).
    control: str
    #: redis-server's unix socket (usable from the root namespace).
    redis_socket: str
    redis_url: str


@dataclass(frozen=True, slots=True)
class Stack:
    prefix: str
    run_dir: str
    p4runtime: str
    device_id: int
    election_id: int
    switch_control_socket: str
    keyspace_id: int
    service_ip: str
    service_port: int
    default_owner: int
    client_netns: str
    client_ip: str
    servers: tuple[ServerInfo, ...]
    changed: bool = False
    actions: tuple[str, ...] = field(default_factory=tuple)
    #: The RESP gateway's address inside the client's namespace ("" for a stack without one).
    gateway: str = ""

    @property
    def service(self) -> tuple[str, int]:
        return self.service_ip, self.service_port

    def server(self, name_or_id: str | int) -> ServerInfo:
        for s in self.servers:
            if s.name == name_or_id or s.server_id == name_or_id:
                return s
        raise LabError(f"no server {name_or_id!r} in the stack")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["servers"] = [asdict(s) for s in self.servers]
        d["actions"] = list(self.actions)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stack:
        d = dict(d)
        d["servers"] = tuple(ServerInfo(**s) for s in d["servers"])
        d["actions"] = tuple(d.get("actions", ()))
        return cls(**d)

    @classmethod
    def load(cls, run_dir: Path | str) -> Stack:
        path = Path(run_dir) / STACK_FILE
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError(
                f"no stack recorded in {run_dir} (run `netmigrate lab up --full`)"
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"invalid stack description {path}: {exc}") from exc


# --- description ------------------------------------------------------------------------------


def describe(config: StackConfig) -> Stack:
    """The stack ``config`` plans (pure: nothing is started)."""
    topo = config.topology()
    run_dir = config.resolved_run_dir()
    servers = []
    for n, name in enumerate(config.redis_hosts, start=1):
        h = topo.host(name)
        servers.append(
            ServerInfo(
                name=name,
                server_id=n,
                netns=h.netns,
                ip=h.ip,
                switch_port=h.switch_port,
                data=f"{h.ip}:{AGENT_UDP_PORT}",
                control_lab=f"{h.ip}:{AGENT_CONTROL_PORT}",
                control=f"127.0.0.1:{config.control_base + n}",
                redis_socket=str(run_dir / f"{name}-redis.sock"),
                redis_url=f"unix://{run_dir / f'{name}-redis.sock'}",
            )
        )
    client = topo.host(config.client_host)
    return Stack(
        prefix=config.prefix,
        run_dir=str(run_dir),
        p4runtime=f"127.0.0.1:{config.grpc_port}",
        device_id=config.device_id,
        election_id=ELECTION_ID,
        switch_control_socket=str(run_dir / "switch-control.sock"),
        keyspace_id=config.keyspace_id,
        service_ip=config.service_ip,
        service_port=SERVICE_PORT_BASE,
        default_owner=1,
        client_netns=client.netns,
        client_ip=client.ip,
        servers=tuple(servers),
        gateway=f"127.0.0.1:{GATEWAY_PORT}",
    )


def _check(config: StackConfig) -> None:
    topo = config.topology()
    svc = ipaddress.ip_address(config.service_ip)
    if svc in ipaddress.ip_network(topo.subnet):
        raise LabError(
            f"service address {svc} must lie outside the hosts' subnet {topo.subnet}: "
            "clients reach it through their default route, i.e. the switch"
        )
    if not 1 <= len(config.redis_hosts) <= 16:
        raise LabError("a stack needs 1..16 Redis hosts")
    if not 1024 <= config.control_base < 65536 - len(config.redis_hosts):
        raise LabError(f"control_base {config.control_base} out of range")
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found on PATH (Debian package redis-server)")


# --- switch configuration -----------------------------------------------------------------------


def _mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def switch_entries(stack: Stack, topology: Topology) -> tuple[list[Any], list[Any]]:
    """(table entries, clone sessions) of the stack's keyspace and routes."""
    from netmigrate.p4rt import TableEntrySpec

    servers = [
        LabServer(s.server_id, s.switch_port, s.ip, _mac(topology.host(s.name).mac), AGENT_UDP_PORT)
        for s in stack.servers
    ]
    entries, clones = netmigrate_entries(
        servers,
        keyspace_id=stack.keyspace_id,
        default_owner=stack.default_owner,
        service_ip=stack.service_ip,
    )
    # The builder's catch-all route is for its own 10.9.0.0/24 test plan: this lab routes every
    # host by its /32 instead.
    entries = [e for e in entries if e.table != "NetMigrateIngress.ipv4_lpm"]
    for prefix, mac, port in topology.routes():
        entries.append(
            TableEntrySpec(
                "NetMigrateIngress.ipv4_lpm",
                {"hdr.ipv4.dstAddr": prefix},
                "NetMigrateIngress.ipv4_forward",
                {"dst_mac": _mac(mac), "port": port},
            )
        )
    return entries, clones


async def configure_switch(stack: Stack, topology: Topology) -> list[str]:
    """Install the pipeline (by cookie) and ensure the stack's entries; what changed."""
    from netmigrate.p4rt import (
        P4RTSession,
        PipelineConfig,
        ensure_clone_sessions,
        ensure_table_entries,
        install_pipeline,
    )
    from netmigrate.resources import p4info_path

    done: list[str] = []
    entries, clones = switch_entries(stack, topology)
    async with P4RTSession(
        stack.p4runtime, device_id=stack.device_id, election_id=stack.election_id
    ) as s:
        pipe = await install_pipeline(s, PipelineConfig.load(p4info_path(), DEVICE_CONFIG))
        if pipe.changed:
            done.append(f"installed pipeline (cookie {pipe.cookie:#x})")
        res = await ensure_table_entries(s, entries)
        if res.changed:
            done.append(f"switch table entries: {len(entries)} ensured")
        cres = await ensure_clone_sessions(s, clones)
        if cres.changed:
            done.append(f"switch clone sessions: {len(clones)} ensured")
    return done


async def reconcile_switch(stack: Stack) -> str | None:
    """Write the agents' slot map and transition epochs back to a switch that lost them (a
    restart empties both); what changed, or None."""
    from netmigrate.migration import AgentEndpoint, KeyspaceRef, SwitchEndpoint, reconcile

    result = await reconcile(
        SwitchEndpoint(stack.p4runtime, device_id=stack.device_id, election_id=stack.election_id),
        KeyspaceRef(stack.keyspace_id, stack.service_ip, stack.service_port),
        [AgentEndpoint(s.server_id, s.control) for s in stack.servers],
    )
    return f"switch slot map from the agents: {result.message}" if result.changed else None


# --- processes ---------------------------------------------------------------------------------


def _switch_process(config: StackConfig, stack: Stack, topology: Topology) -> ProcessSpec:
    spec = switch_spec(
        topology,
        grpc_addr=stack.p4runtime,
        device_id=config.device_id,
        faults=config.faults,
    )
    argv = (*spec.argv, "--control-socket", stack.switch_control_socket, "--log-level", "WARNING")
    return dataclasses.replace(spec, argv=argv)


def _redis_process(s: ServerInfo, run_dir: Path) -> ProcessSpec:
    data = run_dir / f"{s.name}-redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = (
        shutil.which("redis-server") or "redis-server",
        "--port", str(REDIS_PORT),
        "--bind", "127.0.0.1",
        "--unixsocket", s.redis_socket,
        "--unixsocketperm", "700",
        "--dir", str(data),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--databases", "1",
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data / "nodes.conf"),
        "--cluster-require-full-coverage", "no",
    )  # fmt: skip
    return ProcessSpec(name=f"{s.name}-redis", argv=argv, netns=s.netns)


def _agent_process(config: StackConfig, stack: Stack, s: ServerInfo) -> ProcessSpec:
    argv = (
        sys.executable, "-m", "netmigrate.cli", "agent",
        "--redis", s.redis_url,
        "--listen", s.data,
        "--keyspace", str(stack.keyspace_id),
        "--server-id", str(s.server_id),
        "--slots", "all" if s.server_id == stack.default_owner else "none",
        "--control", f"0.0.0.0:{AGENT_CONTROL_PORT}",
        "--advertise-control", s.control_lab,
        "--service", f"{stack.service_ip}:{stack.service_port}",
        # The lab knows its MTU: the keyspace's setting (agent_args may override it).
        "--max-datagram", str(datagram_limit(config.topology().mtu)),
        *config.agent_args,
    )  # fmt: skip
    return ProcessSpec(name=f"{s.name}-agent", argv=argv, netns=s.netns)


def _proxy_process(s: ServerInfo) -> ProcessSpec:
    """Root namespace: ``s.control`` -> the agent's control port inside its namespace."""
    argv = (
        sys.executable, "-m", "netmigrate.lab.proxy",
        "--netns", s.netns,
        "--map", f"{s.control}=127.0.0.1:{AGENT_CONTROL_PORT}",
    )  # fmt: skip
    return ProcessSpec(name=f"{s.name}-control-proxy", argv=argv)


def _peer_proxy_process(stack: Stack, s: ServerInfo) -> ProcessSpec:
    """Inside ``s``'s namespace: every agent's ``control`` address -> that agent (its own on
    loopback, the others through the switch), so one address per agent works everywhere."""
    argv: list[str] = [sys.executable, "-m", "netmigrate.lab.proxy"]
    for peer in stack.servers:
        dest = f"127.0.0.1:{AGENT_CONTROL_PORT}" if peer is s else peer.control_lab
        argv += ["--map", f"{peer.control}={dest}"]
    return ProcessSpec(name=f"{s.name}-peer-proxy", argv=tuple(argv), netns=s.netns)


def _tcp(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _gateway_process(stack: Stack) -> ProcessSpec:
    """The client host's RESP gateway: loopback of the client's namespace only, so no auth."""
    argv = (
        sys.executable, "-m", "netmigrate.cli", "gateway",
        "--listen", stack.gateway,
        "--to", f"{stack.service_ip}:{stack.service_port}",
        "--keyspace", str(stack.keyspace_id),
        "--no-auth",
        "--log-level", "WARNING",
    )  # fmt: skip
    return ProcessSpec(name="client-gateway", argv=argv, netns=stack.client_netns)


def start_switch_process(config: StackConfig, stack: Stack) -> bool:
    """Ensure the lab switch runs; True if it was (re)started (its state is then empty)."""
    topo = config.topology()
    sup = Supervisor(stack.run_dir)
    res = sup.start(
        _switch_process(config, stack, topo), ready=tcp_ready(*_tcp(stack.p4runtime)), timeout=30
    )
    return res.changed


def start_agent(config: StackConfig, stack: Stack, name: str) -> bool:
    s = stack.server(name)
    res = Supervisor(stack.run_dir).start(
        _agent_process(config, stack, s),
        ready=tcp_ready("127.0.0.1", AGENT_CONTROL_PORT, s.netns),
        timeout=30,
    )
    return res.changed


def restart_redis(stack: Stack, name: str) -> None:
    """Restart a server's redis-server. The lab runs Redis without persistence, so its data
    is gone afterwards: what fault tests need (the cluster's slot assignment stays in its
    nodes.conf)."""
    s = stack.server(name)
    sup = Supervisor(stack.run_dir)
    sup.stop(f"{name}-redis")
    sup.start(_redis_process(s, Path(stack.run_dir)), ready=unix_ready(s.redis_socket), timeout=15)


def stop_agent(stack: Stack, name: str) -> bool:
    return Supervisor(stack.run_dir).stop(f"{name}-agent")


def stop_switch_process(stack: Stack) -> bool:
    return Supervisor(stack.run_dir).stop(SWITCH_SERVICE)


# --- up / down ---------------------------------------------------------------------------------


def stack_up(config: StackConfig = StackConfig()) -> Stack:
    """Bring the whole stack up (idempotent) and return its description."""
    _check(config)
    topo = config.topology()
    run_dir = config.resolved_run_dir()
    stack = describe(config)
    result = lab.up(topo, run_dir, cpu=config.cpu)
    actions = list(result.actions)
    sup = Supervisor(run_dir)
    switch_started = start_switch_process(config, stack)
    if switch_started:
        actions.append(f"started {SWITCH_SERVICE} on {stack.p4runtime}")
    actions += asyncio.run(configure_switch(stack, topo))
    for s in stack.servers:
        r = sup.start(_redis_process(s, run_dir), ready=unix_ready(s.redis_socket), timeout=15)
        if r.changed:
            actions.append(f"started redis-server in {s.netns} (pid {r.pid})")
    for s in stack.servers:
        if start_agent(config, stack, s.name):
            actions.append(f"started agent {s.server_id} in {s.netns}")
        r = sup.start(_proxy_process(s), ready=tcp_ready(*_tcp(s.control)), timeout=15)
        if r.changed:
            actions.append(f"started control forwarder {s.control} -> {s.netns}")
        r = sup.start(
            _peer_proxy_process(stack, s),
            ready=tcp_ready(*_tcp(s.control), s.netns),
            timeout=15,
        )
        if r.changed:
            actions.append(f"started peer control forwarders in {s.netns}")
    r = sup.start(
        _gateway_process(stack),
        ready=tcp_ready(*_tcp(stack.gateway), stack.client_netns),
        timeout=15,
    )
    if r.changed:
        actions.append(f"started the RESP gateway {stack.gateway} in {stack.client_netns}")
    if switch_started:
        # A switch that restarted under running agents lost where their slots are and the
        # slots' transition epochs (without which it lets earlier migrations' transitions
        # flip slots again); on a new lab this changes nothing.
        reconciled = asyncio.run(reconcile_switch(stack))
        if reconciled:
            actions.append(reconciled)
    stack = dataclasses.replace(stack, changed=bool(actions), actions=tuple(actions))
    (run_dir / STACK_FILE).write_text(stack.to_json() + "\n")
    return stack


def stack_down(config: StackConfig = StackConfig()) -> lab.LabResult:
    """Stop every process and remove namespaces and files of the stack."""
    run_dir = config.resolved_run_dir()
    result = lab.down(config.topology(), run_dir)
    if run_dir.is_dir():
        for sub in run_dir.glob("*-redis"):
            if sub.is_dir():
                shutil.rmtree(sub, ignore_errors=True)
                result.did(f"removed {sub}")
        for sock in run_dir.glob("*.sock"):
            sock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run_dir.rmdir()
    return result


def free_tcp_port() -> int:
    """An ephemeral port of 127.0.0.1 (tests: a P4Runtime port no other lab uses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_control_base(agents: int = 3) -> int:
    """A ``control_base`` whose agent forwarders (``control_base + 1 .. + agents``) are all
    free on 127.0.0.1 now. A free port's neighbours are often taken (other labs, ephemeral
    ports of connections), so each one is bound to check, not assumed."""
    for _ in range(100):
        first = free_tcp_port()
        if first + agents > 65536:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(first, first + agents):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first - 1
    raise LabError(f"no {agents} consecutive free TCP ports on 127.0.0.1")


__all__ = [
    "SLOT_COUNT",
    "ServerInfo",
    "Stack",
    "StackConfig",
    "configure_switch",
    "describe",
    "free_control_base",
    "stack_down",
    "stack_up",
]
