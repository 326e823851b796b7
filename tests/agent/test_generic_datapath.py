"""Generic commands (CMD_READ / CMD_WRITE) through a real agent over real UDP: Redis' own reply
bytes, the checks of the request, the slot states, the script cache flushed under the agent,
and a slot migrating in (its source answers priority pulls over real gRPC)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent.reserved import dirty_key, slot_tag
from netmigrate.agent.slots import SlotState
from netmigrate.protocol.codec import Command, Control, Header, RespReply, decode, encode
from netmigrate.protocol.constants import Flag, Op, Status
from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd.watch import check_call, fingerprint_call

pytestmark = pytest.mark.redis

SOURCE, TARGET = 1, 2
SLOT = 901
KEYSPACE = 50000


def key(name: str, slot: int = SLOT) -> bytes:
    return b"{" + slot_tag(slot) + b"}:" + name.encode()


def cmd(*args: bytes, transaction: bool = False, resp: int = 2) -> Command:
    if transaction:
        return Command(tuple(tuple(a) for a in args), resp, True)  # type: ignore[arg-type]
    return Command((tuple(args),), resp)


async def test_an_owner_answers_redis_own_bytes(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    h = key("h")
    wrote = await rpc(Op.CMD_WRITE, cmd(b"HSET", h, b"f", b"1", b"g", b"2"), slot=SLOT)
    assert wrote.header.status == Status.OK
    assert wrote.body == RespReply(b":2\r\n")
    read = await rpc(Op.CMD_READ, cmd(b"HGETALL", h), slot=SLOT)
    assert read.body == RespReply(b"*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n")
    # Redis' error reply is an answer of the command: status OK, the RESP error as Redis sent it.
    wrong = await rpc(Op.CMD_READ, cmd(b"GET", h), slot=SLOT)
    assert wrong.header.status == Status.OK
    assert wrong.body.data.startswith(b"-WRONGTYPE ")  # type: ignore[union-attr]
    tx = await rpc(
        Op.CMD_WRITE,
        cmd((b"HINCRBY", h, b"f", b"5"), (b"EXPIRE", h, b"100"), transaction=True),
        slot=SLOT,
    )
    assert tx.body == RespReply(b"*2\r\n:6\r\n:1\r\n")
    assert 0 < cluster_redis.client().ttl(h) <= 100

    # A retry of an applied write gets its answer again and is not applied a second time.
    rid = rpc.send(Op.CMD_WRITE, cmd(b"HINCRBY", h, b"g", b"1"), slot=SLOT)
    first = await rpc.reply()
    rpc.send(Op.CMD_WRITE, cmd(b"HINCRBY", h, b"g", b"1"), slot=SLOT, request_id=rid)
    again = await rpc.reply()
    assert first.body == again.body == RespReply(b":3\r\n")
    assert cluster_redis.client().hget(h, b"g") == b"3"

    # Someone flushes Redis' script cache: BUSY (retryable), the scripts come back.
    cluster_redis.client().script_flush()
    busy = await rpc(Op.CMD_READ, cmd(b"HLEN", h), slot=SLOT)
    assert busy.header.status == Status.BUSY
    await asyncio.sleep(0.2)
    assert (await rpc(Op.CMD_READ, cmd(b"HLEN", h), slot=SLOT)).body == RespReply(b":2\r\n")
    assert (await rpc(Op.CMD_WRITE, cmd(b"DEL", h), slot=SLOT)).body == RespReply(b":1\r\n")
    assert agent._datapath.generic is not None


async def test_what_the_agent_refuses(raw_agent) -> None:
    agent, rpc = await raw_agent()
    cases: list[tuple[int, Command, int, Status, str]] = [
        (Op.CMD_READ, cmd(b"SET", key("a"), b"1"), SLOT, Status.BAD_REQUEST, "write request"),
        (
            Op.CMD_WRITE,
            cmd(b"MSET", key("a"), b"1", key("b", 902), b"2"),
            SLOT,
            Status.CROSSSLOT,
            "CROSSSLOT",
        ),
        (Op.CMD_READ, cmd(b"GET", key("a")), 902, Status.BAD_REQUEST, "keys hash to"),
        (Op.CMD_WRITE, cmd(b"BLPOP", key("a"), b"0"), SLOT, Status.BAD_REQUEST, "blocking"),
        (Op.CMD_READ, cmd(b"EVAL", b"return 1", b"1", key("a")), SLOT, Status.BAD_REQUEST, "write"),
        (
            Op.CMD_WRITE,
            cmd(b"EVALSHA", b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db", b"1", key("a")),
            SLOT,
            Status.BAD_REQUEST,
            "cannot run inside",
        ),
        (Op.CMD_READ, cmd(b"NOSUCH", key("a")), SLOT, Status.BAD_REQUEST, "unknown command"),
        (Op.CMD_READ, cmd(b"FLUSHALL"), SLOT, Status.BAD_REQUEST, "send CMD_WRITE"),
        (
            Op.CMD_READ,
            cmd((b"GET", key("a")), (b"GET", key("a")), transaction=True),
            SLOT,
            Status.BAD_REQUEST,
            "transaction",
        ),
        (
            Op.CMD_WRITE,
            cmd(b"SET", b"__netmigrate__:x", b"1"),
            key_slot(b"__netmigrate__:x"),
            Status.BAD_REQUEST,
            "",
        ),
    ]
    for op, body, slot, status, words in cases:
        answer = await rpc(op, body, slot=slot)
        assert answer.header.status == status, (body, answer)
        assert words in answer.body.message, (body, answer)  # type: ignore[union-attr]

    # A frozen slot (the source after the target's acknowledgement) serves double reads only.
    agent.table.set_state([SLOT], SlotState.FROZEN)
    refused = await rpc(Op.CMD_WRITE, cmd(b"SET", key("a"), b"1"), slot=SLOT)
    assert refused.header.status == Status.WRONG_OWNER
    plain_read = await rpc(Op.CMD_READ, cmd(b"GET", key("a")), slot=SLOT)
    assert plain_read.header.status == Status.WRONG_OWNER
    double = await rpc(Op.CMD_READ, cmd(b"GET", key("a")), slot=SLOT, flags=Flag.DOUBLE_READ)
    assert double.header.status == Status.OK and double.body == RespReply(b"$-1\r\n")
    # A flush would delete what a migration is copying: refused while a slot migrates.
    flush = await rpc(Op.CMD_WRITE, cmd(b"FLUSHALL"), slot=0)
    assert flush.header.status == Status.OK
    assert flush.body == RespReply(
        b"-ERR FLUSHALL is not served while slots of the keyspace migrate\r\n"
    )


async def test_resp3_and_pipeline_batches(raw_agent) -> None:  # type: ignore[no-untyped-def]
    _, rpc = await raw_agent()
    wrote = await rpc(Op.CMD_WRITE, cmd(b"HSET", key("h"), b"f", b"1", resp=3), slot=SLOT)
    assert wrote.header.status == Status.OK and wrote.body == RespReply(b":1\r\n")
    batch = Command(((b"HGETALL", key("h")), (b"GET", key("nope")), (b"HMGET", key("h"), b"x")), 3)
    read = await rpc(Op.CMD_READ, batch, slot=SLOT)
    assert read.header.status == Status.OK
    assert read.body == RespReply(b"%1\r\n$1\r\nf\r\n$1\r\n1\r\n_\r\n*1\r\n_\r\n")


class _Source(control_pb2_grpc.AgentControlServicer):
    """The source's side of priority pulls, over real gRPC, from a real Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pulled: list[bytes] = []

    async def Pull(self, request, context):  # type: ignore[no-untyped-def]
        out = []
        for k in request.keys:
            self.pulled.append(k)
            dump = self.client.dump(k)
            pttl = max(self.client.pttl(k), 0)
            out.append(
                control_pb2.KeyDump(key=k, dump=dump or b"", present=dump is not None, pttl=pttl)
            )
        return control_pb2.PullResponse(keys=out)


async def test_a_slot_migrating_in(raw_agent, cluster_redis, redis_server) -> None:
    source_redis = redis_server(cluster=False).client()
    h, gone, fresh = key("h"), key("gone"), key("fresh")
    source_redis.hset(h, mapping={b"a": b"1"})
    source_redis.expire(h, 500)
    source_redis.set(gone, b"x")
    server = grpc.aio.server()
    source = _Source(source_redis)
    control_pb2_grpc.add_AgentControlServicer_to_server(source, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        agent, rpc = await raw_agent(
            server_id=TARGET, initial_slots=frozenset(), control=("127.0.0.1", 0), hold_timeout=5.0
        )
        start = Header(
            op=int(Op.SLOT_START),
            request_id=1,
            keyspace=KEYSPACE,
            slot=SLOT,
            source_id=SOURCE,
            target_id=TARGET,
        )
        rpc.peer.send(encode(start, Control(1)), rpc.address)
        assert decode((await rpc.peer.recv())[0]).header.status == Status.OK
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.control_port}") as channel:
            await control_pb2_grpc.AgentControlStub(channel).TransferRequestIds(
                control_pb2.TransferRequestIdsRequest(
                    source_id=SOURCE,
                    slots=[control_pb2.SlotRequestIds(slot=SLOT)],
                    source_control=f"127.0.0.1:{port}",
                ),
                timeout=5,
            )
        r = cluster_redis.client()
        double = Flag.DOUBLE_READ | Flag.TO_TARGET

        # Nothing authoritative here yet: a double read is a MISS (the client takes the source's).
        miss = await rpc(Op.CMD_READ, cmd(b"HGETALL", h), slot=SLOT, flags=double)
        assert miss.header.status == Status.MISS

        # HSET needs the hash as it is: pulled first (TTL and all), then applied and marked.
        hset = await rpc(Op.CMD_WRITE, cmd(b"HSET", h, b"b", b"2"), slot=SLOT, flags=Flag.TO_TARGET)
        assert hset.body == RespReply(b":1\r\n")
        assert source.pulled == [h]
        assert r.hgetall(h) == {b"a": b"1", b"b": b"2"}
        assert 400 < r.ttl(h) <= 500, "the pulled TTL is still on the hash"
        assert r.sismember(dirty_key(SLOT), h)

        # Now authoritative: a double read answers from the target, with every field.
        hit = await rpc(Op.CMD_READ, cmd(b"HLEN", h), slot=SLOT, flags=double)
        assert hit.header.status == Status.OK and hit.body == RespReply(b":2\r\n")

        # DEL counts the key the source has: pulled, deleted, a tombstone (dirty and absent).
        deleted = await rpc(Op.CMD_WRITE, cmd(b"DEL", gone), slot=SLOT, flags=Flag.TO_TARGET)
        assert deleted.body == RespReply(b":1\r\n")
        assert not r.exists(gone) and r.sismember(dirty_key(SLOT), gone)
        absent = await rpc(Op.CMD_READ, cmd(b"GET", gone), slot=SLOT, flags=double)
        assert absent.body == RespReply(b"$-1\r\n")

        # In a transaction, a command Redis refuses (WRONGTYPE) changes nothing; the others run.
        source_redis.set(fresh, b"abc")
        failed = await rpc(
            Op.CMD_WRITE,
            cmd((b"SET", fresh, b"v"), (b"LPUSH", h, b"x"), transaction=True),
            slot=SLOT,
            flags=Flag.TO_TARGET,
        )
        assert failed.body.data.startswith(b"*2\r\n+OK\r\n-WRONGTYPE")  # type: ignore[union-attr]
        assert r.get(fresh) == b"v" and r.sismember(dirty_key(SLOT), fresh)
        assert source.pulled == [h, gone, fresh], "an authoritative key is never pulled again"
        assert agent.target._ctx.slots[SLOT].authoritative >= {h, gone, fresh}

        # A script is one write of its declared keys: those not authoritative yet are pulled
        # first, then it runs and they are marked dirty, in one step (#15 item 2).
        counter, other, unseen = key("counter"), key("other"), key("unseen")
        source_redis.set(counter, b"41")
        source_redis.rpush(other, b"s")
        source_redis.set(unseen, b"1")
        body = b"redis.call('RPUSH', KEYS[2], ARGV[1]); return redis.call('INCR', KEYS[1])"
        ran = await rpc(
            Op.CMD_WRITE,
            cmd(b"EVAL", body, b"3", counter, other, fresh, b"t"),
            slot=SLOT,
            flags=Flag.TO_TARGET,
        )
        assert ran.body == RespReply(b":42\r\n")
        assert sorted(source.pulled[3:]) == sorted([counter, other])  # fresh is authoritative
        assert r.lrange(other, 0, -1) == [b"s", b"t"]
        assert r.smismember(dirty_key(SLOT), [counter, other]) == [True, True]
        # EVAL_RO is a read: authoritative keys answer at the target, the others are a MISS.
        get = b"return redis.call('GET', KEYS[1])"
        hit = await rpc(Op.CMD_READ, cmd(b"EVAL_RO", get, b"1", counter), slot=SLOT, flags=double)
        assert hit.header.status == Status.OK and hit.body == RespReply(b"$2\r\n42\r\n")
        miss = await rpc(Op.CMD_READ, cmd(b"EVAL_RO", get, b"1", unseen), slot=SLOT, flags=double)
        assert miss.header.status == Status.MISS
    finally:
        await server.stop(None)


async def test_watch_check_at_a_migration_target(raw_agent, cluster_redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    """WATCH across a migration: fingerprints read at the source, EXEC run at the target,
    which pulls the watched keys first and checks them there (rediscmd.watch)."""
    source_redis = redis_server(cluster=False).client()
    same, changed = key("same"), key("changed")
    source_redis.rpush(same, b"a", b"b")
    source_redis.set(changed, b"1")
    # What the source's read answered at WATCH: the same script, run at the source's Redis.
    read = fingerprint_call([same, changed])
    fps = source_redis.execute_command(*read)
    source_redis.set(changed, b"2")  # a write at the source between WATCH and EXEC
    server = grpc.aio.server()
    source = _Source(source_redis)
    control_pb2_grpc.add_AgentControlServicer_to_server(source, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        agent, rpc = await raw_agent(
            server_id=TARGET, initial_slots=frozenset(), control=("127.0.0.1", 0), hold_timeout=5.0
        )
        start = Header(
            op=int(Op.SLOT_START),
            request_id=1,
            keyspace=KEYSPACE,
            slot=SLOT,
            source_id=SOURCE,
            target_id=TARGET,
        )
        rpc.peer.send(encode(start, Control(1)), rpc.address)
        assert decode((await rpc.peer.recv())[0]).header.status == Status.OK
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.control_port}") as channel:
            await control_pb2_grpc.AgentControlStub(channel).TransferRequestIds(
                control_pb2.TransferRequestIdsRequest(
                    source_id=SOURCE,
                    slots=[control_pb2.SlotRequestIds(slot=SLOT)],
                    source_control=f"127.0.0.1:{port}",
                ),
                timeout=5,
            )
        r = cluster_redis.client()

        # Unchanged since WATCH: pulled, checked at the target, the transaction runs.
        ok = await rpc(
            Op.CMD_WRITE,
            cmd(tuple(check_call({same: fps[0]})), (b"RPUSH", same, b"c"), transaction=True),
            slot=SLOT,
            flags=Flag.TO_TARGET,
        )
        assert ok.body == RespReply(b"*1\r\n:3\r\n")
        assert source.pulled == [same]
        assert r.lrange(same, 0, -1) == [b"a", b"b", b"c"]

        # Changed at the source after WATCH read it: pulled as it is now, EXEC's null, nothing
        # run, nothing marked dirty.
        aborted = await rpc(
            Op.CMD_WRITE,
            cmd(tuple(check_call({changed: fps[1]})), (b"SET", changed, b"9"), transaction=True),
            slot=SLOT,
            flags=Flag.TO_TARGET,
        )
        assert aborted.body == RespReply(b"*-1\r\n")
        assert r.get(changed) == b"2"
        assert not r.sismember(dirty_key(SLOT), changed)
    finally:
        await server.stop(None)
