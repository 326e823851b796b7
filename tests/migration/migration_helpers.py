"""Helpers of the migration tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_relay import Relay

from netmigrate.agent.app import Agent
from netmigrate.agent.config import AgentConfig, parse_redis_url
from netmigrate.agent.reserved import slot_tag
from netmigrate.migration import AgentEndpoint, KeyspaceRef

KEYSPACE = 50000
SOURCE, TARGET = 1, 2


def keys_in(slot: int, n: int, prefix: str = "k") -> list[bytes]:
    """``n`` distinct keys that hash to ``slot``."""
    tag = slot_tag(slot).decode()
    return [f"{{{tag}}}:{prefix}{i}".encode() for i in range(n)]


@dataclass
class Pair:
    source: Agent
    target: Agent
    redis_a: Any
    redis_b: Any
    relay: Relay | None = None
    _agents: list[Agent] = field(default_factory=list)

    @property
    def source_ep(self) -> AgentEndpoint:
        return AgentEndpoint(SOURCE, f"127.0.0.1:{self.source.control_port}")

    @property
    def target_ep(self) -> AgentEndpoint:
        return AgentEndpoint(TARGET, f"127.0.0.1:{self.target.control_port}")

    @property
    def keyspace(self) -> KeyspaceRef:
        """Where SLOT_START goes: the relay when there is one, else the target itself."""
        host, port = self.relay.address if self.relay else self.target.address
        return KeyspaceRef(KEYSPACE, host, port)

    @property
    def service(self) -> tuple[str, int]:
        return self.relay.address if self.relay else self.target.address  # type: ignore[return-value]


def agent_config(redis: Any, server_id: int, slots: frozenset[int], **kw: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "redis": parse_redis_url(redis.agent_url),
        "listen": ("127.0.0.1", 0),
        "keyspace": KEYSPACE,
        "server_id": server_id,
        "initial_slots": slots,
        "control": ("127.0.0.1", 0),
    }
    settings.update(kw)
    return AgentConfig(**settings)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AgentProc:
    args: list[str]
    log: Path
    proc: subprocess.Popen[str] | None = None
    udp: tuple[str, int] | None = None
    control: int | None = None

    @property
    def endpoint_control(self) -> str:
        return f"127.0.0.1:{self.control}"

    def start(self, timeout: float = 60.0) -> AgentProc:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netmigrate.cli", "agent", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        assert line.startswith("READY"), f"agent did not start: {line!r}\n{self.log.read_text()}"
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        host, _, port = fields["udp"].rpartition(":")
        self.udp = (host, int(port))
        self.control = int(fields["control"])
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


async def until(predicate: Any, timeout: float = 20.0, interval: float = 0.02) -> None:
    """Wait until ``predicate()`` is true (fails the test after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def pair_factory(redises: tuple[Any, Any]) -> AsyncIterator[Any]:
    """``await make(relay=False, **source_config)`` -> :class:`Pair` on ``redises``, both
    agents started (each logs in as the servers' ``agent_url`` user); all stopped at exit."""
    made: list[Pair] = []
    relays: list[Relay] = []

    async def make(*, relay: bool = False, target_kw: dict | None = None, **kw: Any) -> Pair:
        a, b = redises
        target = Agent(agent_config(b, TARGET, frozenset(), **(target_kw or {})))
        await target.start()
        p = Pair(target, target, a, b)  # source filled below
        p._agents.append(target)
        made.append(p)
        rel = None
        if relay:
            rel = Relay({TARGET: target.address}, default_owner=SOURCE)
            relays.append(rel)
        source = Agent(agent_config(a, SOURCE, frozenset(range(16384)), **kw))
        await source.start()
        p._agents.append(source)
        p.source = source
        if rel is not None:
            rel.servers[SOURCE] = source.address
            p.relay = rel
        return p

    try:
        yield make
    finally:
        for p in made:
            for agent in p._agents:
                await agent.stop()
        for r in relays:
            r.close()
