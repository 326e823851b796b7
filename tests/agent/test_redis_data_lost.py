"""Issue #12, item 8: an agent notices that its Redis lost its data (FLUSHALL here; a restart
without persistence or an eviction of the agent's state look the same) and stops answering
authoritatively: a GET of a key it had is WRONG_OWNER, not NOT_FOUND, and a restart of the
agent does not claim its configured slots again."""

from __future__ import annotations

import asyncio

from netmigrate.agent.app import Agent
from netmigrate.agent.config import AgentConfig, parse_redis_url
from netmigrate.agent.reserved import slot_tag
from netmigrate.protocol.codec import Get, Set, decode, encode_request
from netmigrate.protocol.constants import Op, Status
from netmigrate.protocol.slot import key_slot

SLOT = 907
KEY = b"{" + slot_tag(SLOT) + b"}:k"


async def test_an_agent_whose_redis_was_flushed_answers_for_no_slot(
    cluster_redis, agent_factory, udp_peer
) -> None:
    agent = await agent_factory(cluster_redis, initial_slots=frozenset(range(16384)))
    peer = await udp_peer()
    assert key_slot(KEY) == SLOT

    async def call(op: Op, rid: int, body: object) -> int:
        peer.send(encode_request(op, rid, 50000, SLOT, body), agent.address)
        return decode((await peer.recv(3.0))[0]).header.status

    assert await call(Op.SET, (7 << 32) | 1, Set(KEY, b"v")) == Status.OK
    assert await call(Op.GET, (7 << 32) | 2, Get(KEY)) == Status.OK
    cluster_redis.client().flushall()
    statuses = []
    for i in range(50):  # the agent checks every DATA_CHECK_INTERVAL (0.5 s)
        statuses.append(await call(Op.GET, (8 << 32) | (i + 1), Get(KEY)))
        if statuses[-1] == Status.WRONG_OWNER:
            break
        await asyncio.sleep(0.1)
    # Before: NOT_FOUND, an authoritative answer from data that is gone.
    assert statuses[-1] == Status.WRONG_OWNER, statuses
    assert "Redis lost its data (run_id " in agent.data_lost, agent.data_lost
    assert "the agent's state is gone" in agent.data_lost
    assert await call(Op.SET, (7 << 32) | 4, Set(KEY, b"w")) == Status.WRONG_OWNER
    assert agent.table.owner_count() == 0

    again = Agent(
        AgentConfig(
            redis=parse_redis_url(cluster_redis.url),
            listen=("127.0.0.1", 0),
            keyspace=50000,
            server_id=1,
            initial_slots=frozenset(range(16384)),
        )
    )
    await again.start()
    try:
        assert again.table.owner_count() == 0
    finally:
        await again.stop()
