"""Any key moves (issue #12.6): copy messages are bounded in bytes, a key bigger than the chunk
size moves in pieces (never one DUMP / RESTORE of it, so no Redis command of the copy stalls
the clients for long), and the target's rules hold for a key rebuilt from pieces (writes win
over copies, TTLs kept). Real redis-servers and real agents."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from migration_helpers import keys_in, until
from test_target_rules import DR_TARGET, Raw, W

from netmigrate import migration
from netmigrate.agent.config import parse_redis_url
from netmigrate.agent.reserved import dirty_key, marker_key
from netmigrate.agent.resp import RespConnection
from netmigrate.agent.restore import finish_command, piece_commands, piece_key
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.codec import Get, Set, SetReply, ValueReply
from netmigrate.protocol.constants import Op, SetCondition, Status

#: The longest a Redis command of the copy may run: no client waits longer behind it.
STALL_LIMIT_MS = 50


def _fill(client: Any, n: int, write: Any, per_round: int = 500) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        write(pipe, i)
        if i % per_round == per_round - 1:
            pipe.execute()
    pipe.execute()


def _watch_latency(*clients: Any) -> None:
    for c in clients:
        c.config_set("latency-monitor-threshold", 5)
        c.execute_command("LATENCY", "RESET")


def _longest_command_ms(client: Any) -> int:
    """The longest command Redis ran since the reset (its latency monitor, in ms)."""
    events = client.execute_command("LATENCY", "LATEST")
    return max([int(e[3]) for e in events if e[0] in (b"command", "command")], default=0)


async def test_keys_far_over_one_message_move_in_byte_bounded_batches(pair) -> None:
    """300 keys of 256 KiB (incompressible): 75 MiB, more than one gRPC message carries, in a
    single batch of keys today."""
    p = await pair()
    p.source.source.slot_retry_seconds = 2.0
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slot = 4242
    keys = keys_in(slot, 300, "medium")
    values = {k: os.urandom(256 << 10) for k in keys}
    _fill(ra, len(keys), lambda pipe, i: pipe.set(keys[i], values[keys[i]]), per_round=50)

    result = await migration.run(
        p.source_ep,
        p.target_ep,
        [slot],
        keyspace=p.keyspace,
        options=MigrationOptions(batch=1000, grace=0, poll=0.05),
    )
    assert result.state == "FINALIZED", result.message
    assert result.keys_copied == len(keys)
    assert p.source.source.counters["source_batches"] >= 75 // 4
    for k in keys:
        assert rb.get(k) == values[k]


async def test_a_big_hash_and_list_move_in_pieces_without_stalling_redis(pair) -> None:
    """A 70 MiB hash (DUMP over the 64 MiB message cap) and a 70 MiB list move in pieces with
    their TTLs, next to small keys, and no Redis command on either side runs 50 ms or more."""
    p = await pair()
    p.source.source.slot_retry_seconds = 2.0
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slot = 777
    big_hash, big_list, big_set, big_zset, big_string = keys_in(slot, 5, "big")
    small = keys_in(slot, 50, "small")
    n = 70 * 1024
    value = [os.urandom(1024) for _ in range(64)]  # 1 KiB values, incompressible
    _fill(ra, n, lambda pipe, i: pipe.hset(big_hash, b"f%d" % i, value[i % 64] + b"%d" % i))
    _fill(ra, n, lambda pipe, i: pipe.rpush(big_list, value[i % 64] + b"%d" % i))
    _fill(ra, 20_000, lambda pipe, i: pipe.sadd(big_set, value[i % 64][:100] + b"%d" % i))
    _fill(ra, 20_000, lambda pipe, i: pipe.zadd(big_zset, {value[i % 64][:100] + b"%d" % i: i / 3}))
    ra.set(big_string, os.urandom(3 << 20))
    ra.pexpire(big_hash, 600_000)
    for i, k in enumerate(small):
        ra.set(k, b"v%d" % i)
    _watch_latency(ra, rb)

    result = await migration.run(
        p.source_ep,
        p.target_ep,
        [slot],
        keyspace=p.keyspace,
        options=MigrationOptions(batch=100, grace=0, poll=0.05),
    )
    stalls = (_longest_command_ms(ra), _longest_command_ms(rb))
    assert result.state == "FINALIZED", result.message
    assert result.keys_copied == 5 + len(small)
    assert p.source.source.counters["source_pieces"] > 140  # 1 MiB pieces
    assert max(stalls) < STALL_LIMIT_MS, f"longest command (source, target): {stalls} ms"

    assert rb.hlen(big_hash) == n and rb.llen(big_list) == n
    assert rb.hget(big_hash, b"f12345") == value[12345 % 64] + b"12345"
    assert rb.lrange(big_list, 0, 2) == [value[i] + b"%d" % i for i in range(3)]
    assert rb.lindex(big_list, n - 1) == value[(n - 1) % 64] + b"%d" % (n - 1)
    assert 590_000 < rb.pttl(big_hash) <= 600_000 and rb.pttl(big_list) == -1
    assert rb.scard(big_set) == 20_000 and rb.zcard(big_zset) == 20_000
    assert rb.zscore(big_zset, value[7][:100] + b"7") == 7 / 3
    assert rb.strlen(big_string) == 3 << 20
    assert all(rb.get(k) == b"v%d" % i for i, k in enumerate(small))
    assert not rb.keys(b"__netmigrate__:*")  # no temporary key left behind
    assert not ra.exists(big_hash, big_list)  # finalized at the source


async def _redis(redis: Any) -> RespConnection:
    return await RespConnection.open(parse_redis_url(redis.url), name="test-pieces")


async def test_a_write_during_a_piecewise_copy_wins_and_a_clean_key_lands_whole(redises) -> None:
    """The target's rules for a key rebuilt from pieces, on a real Redis: nothing is visible
    under the key until its last piece; a key a client wrote meanwhile (dirty) keeps the
    client's value; the temporary key never stays; no marker (the slot completed or gave
    up): nothing lands."""
    _, rb = redises
    r = rb.client()
    slot = 123
    written, clean, late = keys_in(slot, 3, "piece")
    conn = await _redis(rb)
    try:
        r.set(marker_key(slot), b"1")

        async def run(key: bytes, present: bool = True, ttl: int = 0) -> list[Any]:
            cmds = piece_commands(slot, key, "hash", 0, [b"a", b"1", b"b", b"2"])
            cmds += piece_commands(slot, key, "hash", 1, [b"c", b"3"])
            assert not any(
                isinstance(x, Exception) for x in await conn.calls(b"".join(cmds), len(cmds))
            )
            assert not r.exists(key) or key == written  # nothing visible before the end
            return list(await conn.calls(finish_command(slot, key, present, ttl), 1))

        r.set(written, b"client")
        r.sadd(dirty_key(slot), written)
        assert await run(written) == [[0, 1]]
        assert r.get(written) == b"client"

        assert await run(clean, ttl=5000) == [[1, 0]]
        assert r.hgetall(clean) == {b"a": b"1", b"b": b"2", b"c": b"3"}
        assert 4000 < r.pttl(clean) <= 5000

        r.delete(marker_key(slot))
        assert await run(late) == [[-1, 0]]
        assert not r.exists(late)
        assert not any(r.exists(piece_key(slot, k)) for k in (written, clean, late))
    finally:
        conn.close()


async def test_a_client_write_during_the_piecewise_copy_wins_and_reads_stay_correct(
    pair, udp_peer
) -> None:
    """Through the target's data path, while a 2 MiB string moves in 1 KiB pieces: a double
    read answers MISS (the client takes the source's frozen copy, never a half-built key), a
    SET wins over the copy, and a write that needs the old value of a big key is answered
    BUSY (no pull of a big key) until the copy brought it."""
    p = await pair(copy_chunk_bytes=1024, copy_batch_bytes=4096)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slot = 778
    a, b = keys_in(slot, 2, "big")
    values = {a: os.urandom(2 << 20), b: os.urandom(2 << 20)}
    for k, v in values.items():
        ra.set(k, v)
    first, second = [k for k in ra.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)]
    to_b = Raw(await udp_peer(), p.target.address)
    run = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [slot],
            keyspace=p.keyspace,
            options=MigrationOptions(batch=1, grace=0, poll=0.05),
        )
    )
    counters = p.target.target.counters
    await until(lambda: counters["target_pieces"] >= 5, timeout=30, interval=0.001)

    assert (await to_b(Op.GET, Get(first), flags=DR_TARGET))[0] == Status.MISS
    assert await to_b(Op.SET, Set(first, b"client"), flags=W) == (Status.OK, SetReply(True))
    assert await to_b(Op.GET, Get(first), flags=DR_TARGET) == (Status.OK, ValueReply(b"client"))
    nx = Set(second, b"nx", condition=SetCondition.NX)
    assert (await to_b(Op.SET, nx, flags=W))[0] == Status.BUSY
    assert counters["target_pieces"] < 2 * 2048  # the copy was still running

    result = await run
    assert result.state == "FINALIZED", result.message
    assert rb.get(first) == b"client"  # the write won over the copy
    assert rb.get(second) == values[second]
    assert await to_b(Op.SET, nx, flags=W) == (Status.OK, SetReply(False))
    assert p.source.source.counters["source_pulls_refused_big"] >= 1
    assert not rb.keys(b"__netmigrate__:*")
