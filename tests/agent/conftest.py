"""Helpers for agent tests: raw NetMigrate requests over real UDP."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest_asyncio

from netmigrate.protocol.codec import Body, Message, decode, encode_request
from netmigrate.protocol.constants import REPLY_BIT
from netmigrate.protocol.slot import key_slot

KEYSPACE = 50000
_ids = itertools.count(1)


def slot_of(body: Any) -> int:
    if hasattr(body, "key"):
        return key_slot(body.key)
    if hasattr(body, "keys"):
        return key_slot(body.keys[0])
    if hasattr(body, "items"):
        return key_slot(body.items[0][0])
    return 0


class Raw:
    """Sends hand-built requests to one agent and returns its decoded replies."""

    def __init__(self, peer: Any, address: tuple[str, int]) -> None:
        self.peer = peer
        self.address = address

    def send(
        self,
        op: int,
        body: Body,
        *,
        request_id: int | None = None,
        slot: int | None = None,
        flags: int = 0,
        keyspace: int = KEYSPACE,
    ) -> int:
        rid = next(_ids) if request_id is None else request_id
        slot = slot_of(body) if slot is None else slot
        self.peer.send(encode_request(op, rid, keyspace, slot, body, flags), self.address)
        return rid

    async def reply(self, timeout: float = 2.0) -> Message:
        data, _ = await self.peer.recv(timeout)
        return decode(data)

    async def __call__(self, op: int, body: Body, **kw: Any) -> Message:
        rid = self.send(op, body, **kw)
        msg = await self.reply()
        assert msg.header.request_id == rid
        assert msg.header.op == op | REPLY_BIT
        return msg


@pytest_asyncio.fixture
async def raw_agent(
    cluster_redis: Any, agent_factory: Callable[..., Awaitable[Any]], udp_peer: Any
) -> Callable[..., Awaitable[tuple[Any, Raw]]]:
    """Factory: ``agent, raw = await raw_agent(**config)`` on the shared cluster Redis."""

    async def make(**config: Any) -> tuple[Any, Raw]:
        agent = await agent_factory(cluster_redis, **config)
        return agent, Raw(await udp_peer(), agent.address)

    return make
