"""Fixtures shared by every test suite: real redis-server processes and in-process agents.

- ``redis_server`` (function scope) / ``redis_server_session`` (session scope): factories
  that start real ``redis-server`` processes on free ports in temporary folders, cluster
  mode on or off, with an optional password or ACL user. Every process is killed and every
  folder removed at teardown, also when the test fails.
- ``cluster_redis``: one shared, cluster-enabled Redis that owns all slots (a fresh master
  needs ~2 s before it reports ``cluster_state:ok``, so tests share it), flushed before each
  test that uses it.
- ``agent_factory``: NetMigrate agents running on the test's event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis

_START_TIMEOUT = 10.0
#: The restricted ACL user a factory creates with ``agent_rules`` (the roles' agent user).
AGENT_USER = "netmigrate-agent"
_STOP_TIMEOUT = 5.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on 127.0.0.1 (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """One running redis-server."""

    port: int
    dir: Path
    process: subprocess.Popen[bytes]
    cluster: bool
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    host: str = "127.0.0.1"
    #: Cluster bus port (for CLUSTER MEET ip port bus-port); None without cluster mode.
    cluster_port: int | None = None
    #: Password of the restricted ACL user AGENT_USER (``agent_rules`` of the factory).
    agent_password: str | None = field(default=None, repr=False)
    _clients: list[redis.Redis] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        """``redis://`` URL with credentials (for the agent's --redis)."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def agent_url(self) -> str:
        """The URL an agent logs in with: the restricted AGENT_USER when there is one."""
        if self.agent_password is None:
            return self.url
        return f"redis://{AGENT_USER}:{self.agent_password}@{self.host}:{self.port}"

    @property
    def url_without_password(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"redis://{user}{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync redis-py client with the server's credentials, closed at teardown."""
        c = redis.Redis(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            **kwargs,
        )
        self._clients.append(c)
        return c

    def assign_all_slots(self, timeout: float = 15.0) -> None:
        """Make it a one-node cluster owning every slot, and wait for ``cluster_state:ok``."""
        c = self.client()
        c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        self.wait_cluster_ok(timeout)

    def wait_cluster_ok(self, timeout: float = 15.0) -> None:
        c = self.client()
        deadline = time.monotonic() + timeout
        while b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server :{self.port} never reached cluster_state:ok")
            time.sleep(0.05)

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RedisFactory:
    """Starts redis-server processes and owns them until :meth:`close`."""

    def __init__(self) -> None:
        self._servers: list[RedisServer] = []
        self._binary = shutil.which("redis-server")

    def start(
        self,
        *,
        cluster: bool = True,
        password: str | None = None,
        username: str | None = None,
        config: dict[str, str] | None = None,
        agent_rules: Sequence[str] | None = None,
    ) -> RedisServer:
        """Start a redis-server. ``username`` (with ``password``) creates that ACL user with
        full rights and disables the default user; ``password`` alone is ``requirepass``.
        ``agent_rules`` (with ``username``) also creates AGENT_USER with these ACL rules and a
        generated password (``agent_url``)."""
        if self._binary is None:
            raise RuntimeError("redis-server not found: install it (scripts/bootstrap.sh)")
        if username is not None and password is None:
            raise ValueError("an ACL user needs a password")
        if agent_rules is not None and username is None:
            raise ValueError("agent_rules need an admin user (username, password)")
        agent_password = secrets.token_hex(16) if agent_rules is not None else None
        last_error = ""
        for _ in range(5):  # a free port can be taken between probing and binding
            port = free_port()
            folder = Path(tempfile.mkdtemp(prefix=f"nm-redis-{port}-"))
            lines = {
                "port": str(port),
                "bind": "127.0.0.1",
                "dir": str(folder),
                "logfile": str(folder / "redis.log"),
                "save": '""',
                "appendonly": "no",
                "daemonize": "no",
                "cluster-enabled": "yes" if cluster else "no",
            }
            bus_port = free_port() if cluster else None
            if cluster:
                lines["cluster-config-file"] = str(folder / "nodes.conf")
                # Explicit: the default bus port (port + 10000) fails above port 55535.
                lines["cluster-port"] = str(bus_port)
            if password is not None and username is None:
                lines["requirepass"] = password
            lines.update(config or {})
            text = "".join(f"{k} {v}\n" for k, v in lines.items())
            if username is not None:
                text += f"user {username} on >{password} ~* &* +@all\nuser default off\n"
            if agent_rules is not None:
                text += f"user {AGENT_USER} on >{agent_password} {' '.join(agent_rules)}\n"
            conf = folder / "redis.conf"
            conf.write_text(text)
            proc = subprocess.Popen(
                [self._binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            server = RedisServer(
                port,
                folder,
                proc,
                cluster,
                password,
                username,
                cluster_port=bus_port,
                agent_password=agent_password,
            )
            if self._wait_ready(server):
                self._servers.append(server)
                return server
            server.stop()
            last_error = server.log_path.read_text() if server.log_path.exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start:\n{last_error[-2000:]}")

    @staticmethod
    def _wait_ready(server: RedisServer) -> bool:
        probe = redis.Redis(
            host=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            socket_connect_timeout=0.5,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            probe.close()

    def close(self) -> None:
        for server in self._servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)
        self._servers.clear()


@pytest.fixture
def redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory: ``redis_server(cluster=True, password=None, username=None, config=None)``."""
    factory = RedisFactory()
    try:
        yield factory.start
    finally:
        factory.close()


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[Callable[..., RedisServer]]:
    factory = RedisFactory()
    try:
        yield factory.start
    finally:
        factory.close()


@pytest.fixture(scope="session")
def _shared_cluster_redis(redis_server_session: Callable[..., RedisServer]) -> RedisServer:
    server = redis_server_session(cluster=True)
    server.assign_all_slots()
    return server


@pytest.fixture
def cluster_redis(_shared_cluster_redis: RedisServer) -> RedisServer:
    """The shared one-node cluster Redis owning all slots, empty (FLUSHALL) for this test."""
    _shared_cluster_redis.client().flushall()
    return _shared_cluster_redis


@pytest_asyncio.fixture
async def agent_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: ``await agent_factory(server, **AgentConfig fields)`` -> a started ``Agent``
    on 127.0.0.1 (ephemeral UDP port, keyspace 50000, server id 1 unless given)."""
    from netmigrate.agent.app import Agent
    from netmigrate.agent.config import AgentConfig, parse_redis_url

    agents: list[Agent] = []

    async def start(server: RedisServer, **overrides: Any) -> Agent:
        settings: dict[str, Any] = {
            "redis": parse_redis_url(server.url),
            "listen": ("127.0.0.1", 0),
            "keyspace": 50000,
            "server_id": 1,
        }
        settings.update(overrides)
        agent = Agent(AgentConfig(**settings))
        await agent.start()
        agents.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in agents:
            await agent.stop()


class UdpPeer(asyncio.DatagramProtocol):
    """A raw UDP endpoint on 127.0.0.1 for tests: send any bytes, await what comes back."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if data:
            self.transport.sendto(data, addr)
        else:  # asyncio's transport silently drops empty datagrams; the kernel does not
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"", addr)

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect_silence(self, seconds: float = 0.2) -> None:
        """Assert that nothing arrives for ``seconds``."""
        try:
            data, addr = await asyncio.wait_for(self.inbox.get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected datagram from {addr}: {data!r}")

    def drain(self) -> list[bytes]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait()[0])
        return out


@pytest_asyncio.fixture
async def udp_peer() -> AsyncIterator[Callable[[], Awaitable[UdpPeer]]]:
    """Factory: ``peer = await udp_peer()`` -> a :class:`UdpPeer` bound to an ephemeral port."""
    peers: list[UdpPeer] = []

    async def make() -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
        sock = peer.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            if peer.transport is not None:
                peer.transport.close()
