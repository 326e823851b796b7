"""The lean Redis Cluster client against a real 2-node cluster (the peer's own setup)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import MovedError, ResponseError

from netmigrate.bench.kv import ASK, MOVED, CountingEvents, error_kind
from netmigrate.bench.peers import cluster_client
from netmigrate.bench.peers.cluster_client import LeanClusterClient, _redirect_target
from netmigrate.bench.peers.redis_cluster import RedisClusterSystem
from netmigrate.bench.redis_server import HOST
from netmigrate.bench.system import SetupPlan
from netmigrate.cli import main
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot

HALF = SLOT_COUNT // 2


def test_redirect_target_parses_moved_and_ask() -> None:
    assert _redirect_target("MOVED 3999 127.0.0.1:6381") == (3999, ("127.0.0.1", 6381))
    assert _redirect_target("ASK 7 ::1:7000") == (7, ("::1", 7000))


@pytest.fixture
async def cluster() -> AsyncIterator[RedisClusterSystem]:
    system = RedisClusterSystem()  # source owns every slot, target none
    await system.setup(SetupPlan(10, 32, tuple(range(HALF)), {"cpu": "off"}))
    try:
        yield system
    finally:
        await system.teardown()


async def _client(system: RedisClusterSystem, events: CountingEvents) -> LeanClusterClient:
    return await cluster_client.open_lean_client(events, port=system.nodes[0].port, host=HOST)


async def _migrate_keys(system: RedisClusterSystem, slot: int, keys: list[bytes]) -> None:
    """Start moving ``slot`` source -> target by hand and MIGRATE ``keys`` (slot stays open)."""
    source, target = system.nodes[0], system.nodes[-1]
    src, dst = source.client(), target.client()
    try:
        src_id = (await src.execute_command("CLUSTER", "MYID")).decode()
        dst_id = (await dst.execute_command("CLUSTER", "MYID")).decode()
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        await src.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
    finally:
        await src.aclose()
        await dst.aclose()
    system._nm_ids = (src_id, dst_id)  # type: ignore[attr-defined]


async def _finish_slot(system: RedisClusterSystem, slot: int) -> None:
    _, dst_id = system._nm_ids  # type: ignore[attr-defined]
    for node in (system.nodes[-1], system.nodes[0]):  # target first, as redis-cli does
        c = node.client()
        try:
            await c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            await c.aclose()


async def test_routes_pipelined_gets_and_sets_to_the_slot_owner(cluster) -> None:
    events = CountingEvents()
    client = await _client(cluster, events)
    try:
        keys = [b"user%d" % i for i in range(300)]
        # Many workers at once share one connection: replies must match requests (FIFO).
        await asyncio.gather(*(client.set(k, b"v-" + k) for k in keys))
        got = await asyncio.gather(*(client.get(k) for k in keys))
        assert got == [b"v-" + k for k in keys]
        await client.set_many([(k, b"w-" + k) for k in keys])
        assert await client.get_many([*keys, b"absent"]) == [b"w-" + k for k in keys] + [None]
        assert len(client._conns) == 1  # every slot is the source's: one connection
        src = cluster.nodes[0].client()
        try:
            assert await src.get(keys[7]) == b"w-" + keys[7]
            assert int(await src.dbsize()) == len(keys)
        finally:
            await src.aclose()
        assert events.counts == {}
    finally:
        await client.aclose()


async def test_moved_after_a_hand_moved_slot_updates_the_map(cluster) -> None:
    events = CountingEvents()
    client = await _client(cluster, events)
    try:
        key = b"moved-key"
        slot = key_slot(key)
        await client.set(key, b"before")
        await _migrate_keys(cluster, slot, [key])
        await _finish_slot(cluster, slot)
        assert client.owner(slot) == (HOST, cluster.nodes[0].port)  # stale until told
        assert await client.get(key) == b"before"
        assert events.counts == {MOVED: 1}
        assert client.owner(slot) == (HOST, cluster.nodes[-1].port)
        await client.set(key, b"after")  # straight to the new owner: no second MOVED
        assert await client.get(key) == b"after"
        assert events.counts == {MOVED: 1}
        other = b"user1" if key_slot(b"user1") != slot else b"user2"
        assert client.owner(key_slot(other)) == (HOST, cluster.nodes[0].port)
    finally:
        await client.aclose()


async def test_ask_during_a_migration_is_followed_with_asking_once(cluster) -> None:
    events = CountingEvents()
    client = await _client(cluster, events)
    try:
        moved, stays = b"{tag}moved", b"{tag}stays"
        slot = key_slot(moved)
        assert key_slot(stays) == slot
        await client.set(moved, b"m")
        await client.set(stays, b"s")
        await _migrate_keys(cluster, slot, [moved])
        # The source no longer has the key and the slot is MIGRATING: ASK to the target,
        # which answers only because ASKING came first (it does not own the slot yet).
        assert await client.get(moved) == b"m"
        assert events.counts == {ASK: 1}
        assert client.owner(slot) == (HOST, cluster.nodes[0].port)  # ASK leaves the map
        assert await client.get(stays) == b"s"  # still on the source: no redirection
        assert await client.get(moved) == b"m"
        assert events.counts == {ASK: 2}
        tgt = cluster.nodes[-1].client()
        try:
            with pytest.raises(MovedError):
                await tgt.get(moved)  # without ASKING the target refuses: ASKING was sent
        finally:
            await tgt.aclose()
    finally:
        await client.aclose()


async def test_errors_are_raised_with_their_code_and_lost_connections_retried(cluster) -> None:
    events = CountingEvents()
    client = await _client(cluster, events)
    src = cluster.nodes[0].client()
    try:
        await src.rpush(b"a-list", b"x")
        with pytest.raises(ResponseError) as err:
            await client.get(b"a-list")
        assert error_kind(err.value) == "WRONGTYPE"  # the runner's error label
        await client.set(b"k", b"v")
        killed = await src.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        # The killed connection is replaced: the operation still succeeds.
        for _ in range(3):
            assert await client.get(b"k") == b"v"
        assert set(events.counts) <= {"RECONNECT"}
    finally:
        await src.aclose()
        await client.aclose()


async def test_cluster_slots_seed_fills_every_slot(cluster) -> None:
    client = await _client(cluster, CountingEvents())
    try:
        owners = {client.owner(s) for s in range(SLOT_COUNT)}
        assert owners == {(HOST, cluster.nodes[0].port)}
    finally:
        await client.aclose()


def test_bench_run_tuned_peer_with_the_lean_client_verifies_clean(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    rc = main([
        "bench", "run", "--system", "redis-cluster-tuned", "--workload", "A", "--records", "2000",
        "--duration", "3", "--concurrency", "8", "--overhead-seconds", "0", "--quiet",
        "--client-processes", "2", "--no-plots", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    run = _only_run(report)
    assert "lean cluster client" in run["system_info"]["client"]
    ver = run["verification"]
    assert ver["history"]["ok"], ver["history"]["examples"]
    assert ver["lost_writes"] == ver["stale_reads"] == ver["unknown_values"] == 0
    assert ver["slots_ok"] and ver["keys_checked"] == 2000
    assert run["totals"]["error_count"] == 0
    events = run["totals"]["client_events"]
    assert events.get(MOVED, 0) > 0  # the load followed the resharding
    server = run["server_counters"]
    assert events[MOVED] <= server.get("errorstat_MOVED", 0)
    assert events.get(ASK, 0) <= server.get("errorstat_ASK", 0)


def _only_run(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    assert len(runs) == 1
    return runs[0]


def test_cpu_per_operation_tool_measures_both_clients(capsys) -> None:
    rc = main(["bench", "cluster-client", "--", "--ops", "400", "--keys", "50", "--rounds", "1",
               "--json"])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["client"] for r in rows] == ["lean", "redis-py"]
    assert all(r["cpu_us_per_op"] > 0 and r["ops_per_s"] > 0 for r in rows)
