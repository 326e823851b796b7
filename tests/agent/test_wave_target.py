"""The target's side of a wave of slots, over real UDP and real gRPC with a hand-driven
"source": STARTs and COMPLETEs of several slots back to back (and resent), the request ids of
several slots in one TransferRequestIds (all or none), one Copy stream carrying batches of
several slots."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.reserved import dirty_key, marker_key, request_id_key, slot_tag
from netmigrate.agent.slots import SlotState
from netmigrate.protocol.codec import Control, Header, Set, SetReply, decode, encode
from netmigrate.protocol.constants import REPLY_BIT, Flag, Op, Status

KEYSPACE = 50000
SOURCE, TARGET = 1, 2
SLOTS = (501, 502, 503)


def key(slot: int, name: str) -> bytes:
    return b"{" + slot_tag(slot) + b"}:" + name.encode()


def transition(op: Op, slot: int, rid: int) -> bytes:
    header = Header(
        op=int(op),
        request_id=rid,
        keyspace=KEYSPACE,
        slot=slot,
        source_id=SOURCE,
        target_id=TARGET,
    )
    return encode(header, Control(1))


async def acks(peer, n: int) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """request id -> status of the next ``n`` replies."""
    out = {}
    for _ in range(n):
        msg = decode((await peer.recv())[0])
        assert msg.header.op & REPLY_BIT
        out[msg.header.request_id] = msg.header.status
    return out


async def test_a_wave_of_slots_at_the_target(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent(
        server_id=TARGET, initial_slots=frozenset(), control=("127.0.0.1", 0), hold_timeout=5.0
    )
    peer, addr = rpc.peer, rpc.address
    r = cluster_redis.client()
    store = agent.target._ctx.store
    writes = store.writes

    # STARTs back to back: each acknowledged, all entered with one persisted change.
    for i, slot in enumerate(SLOTS):
        peer.send(transition(Op.SLOT_START, slot, 100 + i), addr)
    assert await acks(peer, 3) == {100: Status.OK, 101: Status.OK, 102: Status.OK}
    assert store.writes - writes == 1
    assert all(agent.table.state(s) == SlotState.MIGRATING_IN for s in SLOTS)
    assert all(r.get(marker_key(s)) == b"1" for s in SLOTS)
    records = await MigrationStore(agent._admin, 0, TARGET, agent.table).load_slots()
    assert {s: (rec.role, rec.phase) for s, rec in records.items()} == {
        s: ("in", "migrating") for s in SLOTS
    }

    # A resent START of one slot of the wave: acknowledged again, its bookkeeping kept.
    r.sadd(dirty_key(502), key(502, "marked"))
    peer.send(transition(Op.SLOT_START, 502, 110), addr)
    assert await acks(peer, 1) == {110: Status.OK}
    assert r.sismember(dirty_key(502), key(502, "marked"))

    # A client write for 502, held until the ids arrive.
    written = rpc.send(Op.SET, Set(key(502, "w"), b"new"), request_id=7001, flags=Flag.TO_TARGET)
    await asyncio.sleep(0.1)
    assert not r.exists(key(502, "w"))

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{agent.control_port}")
    stub = control_pb2_grpc.AgentControlStub(channel)
    try:
        # Ids of several slots, one of which does not migrate in: refused, nothing installed.
        retried = 7002
        reply = encode(Header(Op.SET, retried, KEYSPACE, 503).reply(), SetReply(True))
        per_slot = [
            control_pb2.SlotRequestIds(slot=501),
            control_pb2.SlotRequestIds(
                slot=503, entries=[control_pb2.RequestIdEntry(request_id=retried, reply=reply)]
            ),
            control_pb2.SlotRequestIds(slot=504),
        ]
        request = control_pb2.TransferRequestIdsRequest(source_id=SOURCE, slots=per_slot)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.TransferRequestIds(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "504" in info.value.details()
        assert agent.dedup.get(retried) is None
        assert not r.exists(key(502, "w"))  # still held

        # The wave's ids: every slot listed back, the held write runs, the entry is in place.
        del per_slot[2]
        per_slot.append(control_pb2.SlotRequestIds(slot=502))
        request = control_pb2.TransferRequestIdsRequest(
            source_id=SOURCE, slots=per_slot, source_control="127.0.0.1:1"
        )
        answer = await stub.TransferRequestIds(request, timeout=5)
        assert sorted(answer.slots) == list(SLOTS) and answer.installed == 1
        # ...and recorded in Redis, so a restart of this agent still catches the retry (D16).
        assert r.pttl(request_id_key(retried)) > 0
        done = decode((await peer.recv())[0])
        assert (done.header.request_id, done.header.status) == (written, Status.OK)
        assert r.get(key(502, "w")) == b"new"
        # A retry of the write the source applied is answered from its reply, not applied.
        rpc.send(Op.SET, Set(key(503, "r"), b"again"), request_id=retried, flags=Flag.TO_TARGET)
        assert (await peer.recv())[0] == reply
        assert not r.exists(key(503, "r"))

        # One copy stream, batches of several slots; the key written here is not overwritten.
        def dump(value: bytes) -> bytes:
            r.set(b"tmp", value)
            payload = r.dump(b"tmp")
            r.delete(b"tmp")
            return payload

        def kd(k: bytes, v: bytes | None) -> control_pb2.KeyDump:
            if v is None:
                return control_pb2.KeyDump(key=k, present=False)
            return control_pb2.KeyDump(key=k, dump=dump(v), pttl=0, present=True)

        batches = [
            control_pb2.CopyBatch(
                source_id=SOURCE,
                seq=1,
                parts=[
                    control_pb2.CopyPart(slot=501, keys=[kd(key(501, "a"), b"A")]),
                    control_pb2.CopyPart(
                        slot=502, keys=[kd(key(502, "w"), b"old"), kd(key(502, "b"), b"B")]
                    ),
                ],
            ),
            control_pb2.CopyBatch(
                source_id=SOURCE,
                seq=2,
                parts=[
                    control_pb2.CopyPart(
                        slot=503, keys=[kd(key(503, "c"), b"C"), kd(key(503, "gone"), None)]
                    )
                ],
            ),
        ]
        call = stub.Copy(iter(batches), timeout=10)
        got = [(a.seq, a.restored, a.skipped_dirty) async for a in call]
        assert got == [(1, 2, 1), (2, 1, 0)]
        assert [r.get(key(s, n)) for s, n in ((501, "a"), (502, "b"), (503, "c"))] == [
            b"A",
            b"B",
            b"C",
        ]
        assert r.get(key(502, "w")) == b"new"  # writes win over copies

        # A batch naming a slot that does not migrate in fails the stream.
        bad = control_pb2.CopyBatch(
            source_id=SOURCE,
            seq=3,
            parts=[
                control_pb2.CopyPart(slot=501, keys=[kd(key(501, "x"), b"X")]),
                control_pb2.CopyPart(slot=504, keys=[kd(key(504, "y"), b"Y")]),
            ],
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.Copy(iter([bad]), timeout=10):
                pass
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert not r.exists(key(501, "x"))
    finally:
        await channel.close()

    # COMPLETEs back to back, and a resent one: all owned, bookkeeping and records gone.
    writes = store.writes
    for i, slot in enumerate(SLOTS):
        peer.send(transition(Op.SLOT_COMPLETE, slot, 200 + i), addr)
    assert await acks(peer, 3) == {200: Status.OK, 201: Status.OK, 202: Status.OK}
    peer.send(transition(Op.SLOT_COMPLETE, 502, 210), addr)
    assert await acks(peer, 1) == {210: Status.OK}
    assert all(agent.table.state(s) == SlotState.OWNED for s in SLOTS)
    assert store.writes - writes == 2  # owned (one change for the wave), records dropped
    assert await MigrationStore(agent._admin, 0, TARGET, agent.table).load_slots() == {}
    assert not any(r.exists(marker_key(s)) or r.exists(dirty_key(s)) for s in SLOTS)
    assert (await rpc(Op.SET, Set(key(501, "mine"), b"v"))).header.status == Status.OK
