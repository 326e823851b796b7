"""A gateway in this process over one real agent (all slots) and its cluster-mode Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from netmigrate.client.aio import AsyncClient
from netmigrate.gateway.acl import Acl
from netmigrate.gateway.keyspace import ClientKeyspace
from netmigrate.gateway.server import running
from netmigrate.gateway.session import Session
from netmigrate.rediscmd.table import CommandTable


@pytest_asyncio.fixture
async def gateway_and_client(
    cluster_redis, agent_factory
) -> AsyncIterator[tuple[int, AsyncClient]]:  # type: ignore[no-untyped-def]
    """The gateway's port and the client it speaks NetMigrate with."""
    agent = await agent_factory(cluster_redis)
    table = CommandTable.shipped()
    # The lab's keyspace setting (MTU 9000): on loopback the route alone would allow 64 KiB.
    async with AsyncClient(
        agent.address, 50000, command_table=table, max_datagram=9000 - 28
    ) as client:
        keyspace = ClientKeyspace(client, [agent.address])
        async with running(lambda: Session(keyspace, table, Acl.no_auth())) as server:
            yield server.sockets[0].getsockname()[1], client


@pytest.fixture
def gateway_port(gateway_and_client) -> int:  # type: ignore[no-untyped-def]
    return gateway_and_client[0]
