"""What one controller run talks to: one channel per agent and one switch session.

Every API call of :mod:`netmigrate.migration.controller` runs inside :func:`connections`: the
channels and the switch session it opens are kept until the outermost call ends, so a
``migrate`` run (plan, start, wait, finalize) reaches each agent over one channel and the
switch over one session. A caller that makes several calls for one job (``netmigrate
migrate --abort`` looks up the migration id, then aborts and waits) wraps them in one
``async with connections():``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from netmigrate.migration.agents import AgentClient
from netmigrate.migration.model import AgentEndpoint, SwitchEndpoint
from netmigrate.migration.switch_view import SwitchLink


class Connections:
    """Channels to agents and links to switches, each opened on first use, closed together."""

    def __init__(self) -> None:
        self._agents: dict[AgentEndpoint, AgentClient] = {}
        self._switches: dict[Any, SwitchLink] = {}

    def agent(self, endpoint: AgentEndpoint) -> AgentClient:
        client = self._agents.get(endpoint)
        if client is None:
            client = self._agents[endpoint] = AgentClient(endpoint)
        return client

    def switch(self, switch: Any) -> SwitchLink:
        """The link to ``switch``: a SwitchEndpoint, an open session or None."""
        key: Any = id(switch)
        if isinstance(switch, SwitchEndpoint):
            key = (switch.address, switch.device_id, switch.election_id, switch.role)
        link = self._switches.get(key)
        if link is None:
            link = self._switches[key] = SwitchLink(switch)
        return link

    async def close(self) -> None:
        agents, self._agents = self._agents, {}
        switches, self._switches = self._switches, {}
        for client in agents.values():
            await client.close()
        for link in switches.values():
            await link.close()


_CURRENT: ContextVar[Connections | None] = ContextVar("netmigrate_connections", default=None)


@contextlib.asynccontextmanager
async def connections() -> AsyncIterator[Connections]:
    """The current run's connections, or new ones kept until this block ends.

    Tasks started inside the block (``asyncio.gather`` of two runs) inherit the connections;
    runs started outside any block each get their own.
    """
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    conns = Connections()
    token = _CURRENT.set(conns)
    try:
        yield conns
    finally:
        _CURRENT.reset(token)
        await conns.close()
