"""ensure_single_node_cluster against real redis-server processes (sync and asyncio twins)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio

from netmigrate.agent.redis_node import (
    ClusterModeResult,
    RedisNodeError,
    ensure_single_node_cluster,
    ensure_single_node_cluster_async,
    owned_slots_from_nodes,
)


def _owned(client) -> set[int]:
    return owned_slots_from_nodes(client.execute_command("CLUSTER", "NODES"))


def test_fresh_node_gets_every_slot_then_nothing_changes(redis_server) -> None:
    server = redis_server(cluster=True)
    client = server.client()
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 100, 199)

    preview = ensure_single_node_cluster(client, check_only=True)
    assert preview == ClusterModeResult(changed=True, added_slots=16284, known_nodes=1)
    assert _owned(client) == set(range(100, 200))  # check mode changed nothing

    result = ensure_single_node_cluster(client)
    assert result == ClusterModeResult(changed=True, added_slots=16284, known_nodes=1)
    assert _owned(client) == set(range(16384))
    assert b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
    client.set("works", "1")  # serving, not CLUSTERDOWN

    again = ensure_single_node_cluster(client)
    assert again == ClusterModeResult(changed=False, added_slots=0, known_nodes=1)
    assert ensure_single_node_cluster(client, check_only=True).changed is False


async def test_async_twin_behaves_the_same(redis_server) -> None:
    server = redis_server(cluster=True)
    client = redis.asyncio.Redis(port=server.port)
    try:
        result = await ensure_single_node_cluster_async(client)
        assert result == ClusterModeResult(changed=True, added_slots=16384, known_nodes=1)
        again = await ensure_single_node_cluster_async(client)
        assert again.changed is False
        assert _owned(server.client()) == set(range(16384))
    finally:
        await client.aclose()


def test_redis_without_cluster_mode_is_refused(redis_server) -> None:
    client = redis_server(cluster=False).client()
    with pytest.raises(RedisNodeError, match="cluster-enabled yes"):
        ensure_single_node_cluster(client)
    with pytest.raises(RedisNodeError, match="CONFIG SET"):
        ensure_single_node_cluster(client, check_only=True)


def test_member_of_a_two_node_cluster_is_refused(redis_server) -> None:
    a, b = redis_server(cluster=True), redis_server(cluster=True)
    ca, cb = a.client(), b.client()
    ca.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.cluster_port)
    deadline = time.monotonic() + 10
    while b"cluster_known_nodes:2" not in cb.execute_command("CLUSTER", "INFO"):
        assert time.monotonic() < deadline, "the two nodes never met"
        time.sleep(0.05)
    before = _owned(cb)
    with pytest.raises(RedisNodeError, match="multi-node cluster \\(2 known nodes\\)"):
        ensure_single_node_cluster(cb)
    assert _owned(cb) == before == set()  # refused before touching anything


def test_nodes_parsing_ignores_migration_marks_and_other_nodes() -> None:
    text = (
        "abc 127.0.0.1:7000@17000 master - 0 0 1 connected 5-6 9 [7->-def]\n"
        "def 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 0-2 10 [11-<-abc]\n"
    )
    assert owned_slots_from_nodes(text) == {0, 1, 2, 10}
    with pytest.raises(RedisNodeError):
        owned_slots_from_nodes("abc 127.0.0.1:7000@17000 master - 0 0 1 connected\n")
