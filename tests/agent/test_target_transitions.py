"""The target side of SLOT_START / SLOT_COMPLETE over real UDP, with a hand-driven "source":
acknowledgements, refusals, the bounded hold queue, completion and its persistence."""

from __future__ import annotations

import asyncio

from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.reserved import AGENT_STATE_KEY, dirty_key, marker_key, slot_tag
from netmigrate.agent.slots import SlotState
from netmigrate.protocol.codec import Control, ErrorReply, Header, MGet, Set, decode, encode
from netmigrate.protocol.constants import REPLY_BIT, Flag, Op, Status

KEYSPACE = 50000
SLOT = 123
KEY = b"{" + slot_tag(SLOT) + b"}:k"


def transition(
    op: Op, *, source: int = 1, target: int = 2, slot: int = SLOT, rid: int = 9, epoch: int = 1
) -> bytes:
    header = Header(
        op=int(op), request_id=rid, keyspace=KEYSPACE, slot=slot, source_id=source, target_id=target
    )
    return encode(header, Control(epoch))


async def test_start_hold_complete(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent(
        server_id=2, initial_slots=frozenset(), hold_limit=2, hold_timeout=0.3
    )
    peer, addr = rpc.peer, rpc.address

    # Refusals: wrong target id; a slot the target owns; COMPLETE without START.
    peer.send(transition(Op.SLOT_START, target=3), addr)
    assert decode((await peer.recv())[0]).header.status == Status.BAD_REQUEST
    peer.send(transition(Op.SLOT_COMPLETE), addr)
    reply = decode((await peer.recv())[0])
    assert reply.header.status == Status.ERROR and "does not migrate in" in reply.body.message

    # START: acknowledged once persisted; a resent START is acknowledged again.
    for rid in (10, 11):
        peer.send(transition(Op.SLOT_START, rid=rid), addr)
        ack = decode((await peer.recv())[0])
        assert ack.header.op == Op.SLOT_START | REPLY_BIT and ack.header.status == Status.OK
        assert ack.header.request_id == rid
        assert ack.body == Control(1)  # the acknowledgement names its migration
    assert agent.table.state(SLOT) == SlotState.MIGRATING_IN
    r = cluster_redis.client()
    assert r.get(marker_key(SLOT)) == b"1"
    records = await MigrationStore(agent._admin, 0, 2, agent.table).load_slots()
    assert records[SLOT].role == "in" and records[SLOT].peer == 1
    # Another source for the same slot is refused.
    peer.send(transition(Op.SLOT_START, source=3), addr)
    assert decode((await peer.recv())[0]).header.status == Status.ERROR

    # A double-read MGET before any write here: MISS at once (the source's answer is current).
    mget = rpc.send(Op.MGET, MGet((KEY, KEY + b"2")), flags=Flag.DOUBLE_READ | Flag.TO_TARGET)
    miss = decode((await peer.recv())[0])
    assert (miss.header.request_id, miss.header.status) == (mget, Status.MISS)

    # No request ids from the source yet: writes are held (2 at most), then BUSY.
    for rid in (20, 21, 22):
        rpc.send(Op.SET, Set(KEY, b"v"), request_id=rid, flags=Flag.TO_TARGET)
    first = decode((await peer.recv())[0])
    assert (first.header.request_id, first.header.status) == (22, Status.BUSY)  # queue full
    late = [decode((await peer.recv(2.0))[0]) for _ in range(2)]
    assert {(m.header.request_id, m.header.status) for m in late} == {
        (20, Status.BUSY),
        (21, Status.BUSY),
    }
    assert isinstance(late[0].body, ErrorReply) and "request ids" in late[0].body.message
    assert not r.exists(KEY)  # nothing was applied

    # COMPLETE: owned, persisted, bookkeeping gone; the write is served as the owner now.
    peer.send(transition(Op.SLOT_COMPLETE, rid=30), addr)
    done = decode((await peer.recv())[0])
    assert done.header.status == Status.OK and done.header.request_id == 30
    assert agent.table.state(SLOT) == SlotState.OWNED
    await asyncio.sleep(0.1)  # the record's removal follows the acknowledgement
    assert await MigrationStore(agent._admin, 0, 2, agent.table).load_slots() == {}
    assert not r.exists(marker_key(SLOT)) and not r.exists(dirty_key(SLOT))
    peer.send(transition(Op.SLOT_COMPLETE, rid=31), addr)  # resent: confirmed again
    assert decode((await peer.recv())[0]).header.status == Status.OK
    assert (await rpc(Op.SET, Set(KEY, b"mine"))).header.status == Status.OK
    assert r.get(KEY) == b"mine"


async def test_stale_transitions_are_dropped_unanswered(raw_agent, cluster_redis) -> None:
    """A transition of an earlier migration of the slot (by epoch) changes nothing here and
    gets no answer; the current migration's go through."""
    agent, rpc = await raw_agent(server_id=2, initial_slots=frozenset())
    peer, addr = rpc.peer, rpc.address

    def counted() -> int:
        return agent.target.counters["target_stale_transitions"]

    # Migration 5 of the slot comes in and completes.
    peer.send(transition(Op.SLOT_START, epoch=5), addr)
    assert decode((await peer.recv())[0]).body == Control(5)
    # During it: a START and a COMPLETE of another epoch are dropped.
    for op, epoch in ((Op.SLOT_START, 4), (Op.SLOT_START, 6), (Op.SLOT_COMPLETE, 4)):
        peer.send(transition(op, epoch=epoch), addr)
    await peer.expect_silence(0.2)
    assert agent.table.state(SLOT) == SlotState.MIGRATING_IN
    assert counted() == 3
    peer.send(transition(Op.SLOT_COMPLETE, epoch=5), addr)
    assert decode((await peer.recv())[0]).body == Control(5)
    assert agent.table.state(SLOT) == SlotState.OWNED
    # A resent COMPLETE of another migration: dropped; of this one: confirmed.
    peer.send(transition(Op.SLOT_COMPLETE, epoch=4), addr)
    await peer.expect_silence(0.2)
    assert counted() == 4
    peer.send(transition(Op.SLOT_COMPLETE, epoch=5), addr)
    assert decode((await peer.recv())[0]).body == Control(5)

    # The epoch outlives the slot's record: after a restart of the agent on the same Redis...
    await asyncio.sleep(0.1)
    assert await MigrationStore(agent._admin, 0, 2, agent.table).load_slots() == {}
    store = MigrationStore(agent._admin, 0, 2, agent.table)
    assert (await store.load_epochs())[SLOT] == 5
    # ...and once the slot is not owned here any more, an old START cannot open it again.
    agent.table.set_state([SLOT], SlotState.NOT_OWNED)
    for epoch in (1, 5):
        peer.send(transition(Op.SLOT_START, epoch=epoch), addr)
    await peer.expect_silence(0.2)
    assert agent.table.state(SLOT) == SlotState.NOT_OWNED
    assert counted() == 6
    peer.send(transition(Op.SLOT_START, epoch=6), addr)
    assert decode((await peer.recv())[0]).body == Control(6)
    assert agent.table.state(SLOT) == SlotState.MIGRATING_IN


async def test_a_slot_is_never_completed_into_a_redis_that_lost_the_data(
    raw_agent, cluster_redis
) -> None:
    """#12.8, seen in CI: the target's Redis restarted without its data while a slot migrated
    in; the agent's admin connection reconnected by itself and a SLOT_COMPLETE made the slot
    owned there (its copied keys gone) before the periodic check saw the loss. Now the
    completion's write is refused, and the COMPLETE is refused naming the loss."""
    agent, rpc = await raw_agent(server_id=2, initial_slots=frozenset())
    peer, addr = rpc.peer, rpc.address
    peer.send(transition(Op.SLOT_START, rid=10), addr)
    assert decode((await peer.recv())[0]).header.status == Status.OK
    r = cluster_redis.client()
    r.flushall()  # what a restart without persistence leaves behind
    peer.send(transition(Op.SLOT_COMPLETE, rid=11), addr)
    replies = []
    for rid in range(12, 40):  # the source resends until it has an answer
        try:
            replies.append(decode((await peer.recv(0.2))[0]))
        except TimeoutError:
            peer.send(transition(Op.SLOT_COMPLETE, rid=rid), addr)
            continue
        break
    assert replies, "no answer to SLOT_COMPLETE"
    reply = replies[0]
    assert reply.header.status == Status.ERROR, reply
    assert f"slot {SLOT}: server 2: Redis lost its data (run_id " in reply.body.message
    assert agent.table.state(SLOT) == SlotState.NOT_OWNED
    assert agent.data_lost
    assert r.hget(AGENT_STATE_KEY, b"owned") == bytes(2048)  # the lost ownership, recorded
