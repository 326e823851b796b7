"""The rules at the target and the freeze at the source, request by request, while a slot is
really migrating (copy slowed down by the rate limit, so the test can act between batches).

Requests are sent to each agent the way the switch would steer them: writes to the target with
TO_TARGET, double reads to both with DOUBLE_READ (the target's copy also with TO_TARGET)."""

from __future__ import annotations

import asyncio

from migration_helpers import KEYSPACE, keys_in, until

from netmigrate import migration
from netmigrate.agent.reserved import is_reserved
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.codec import (
    CountReply,
    Delete,
    Get,
    IncrBy,
    IntReply,
    MGet,
    MGetReply,
    Set,
    SetReply,
    ValueReply,
    decode,
    encode_request,
)
from netmigrate.protocol.constants import Flag, Op, SetCondition, Status
from netmigrate.protocol.slot import key_slot

SLOT = 777
W = int(Flag.TO_TARGET)
DR_TARGET = int(Flag.DOUBLE_READ | Flag.TO_TARGET)
DR_OWNER = int(Flag.DOUBLE_READ)


class Raw:
    def __init__(self, peer, address) -> None:  # type: ignore[no-untyped-def]
        self.peer, self.address = peer, address
        self.next_id = 1000

    async def __call__(self, op, body, *, flags=0, request_id=None):  # type: ignore[no-untyped-def]
        if request_id is None:
            self.next_id += 1
            request_id = self.next_id
        slot = key_slot(body.keys[0] if hasattr(body, "keys") else body.key)
        self.peer.send(encode_request(op, request_id, KEYSPACE, slot, body, flags), self.address)
        data, _ = await self.peer.recv(3.0)
        msg = decode(data)
        assert msg.header.request_id == request_id
        return msg.header.status, msg.body


async def test_writes_win_deletes_stay_pulls_happen_once_and_reads_are_authoritative(
    pair, udp_peer
) -> None:
    p = await pair()
    ra, rb = p.redis_a.client(), p.redis_b.client()
    keys = keys_in(SLOT, 40)
    for i, k in enumerate(keys):
        ra.set(k, b"old%d" % i)
    counter, retried = keys_in(SLOT, 2, "counter")
    ra.set(counter, b"100")
    to_a = Raw(await udp_peer(), p.source.address)
    to_b = Raw(await udp_peer(), p.target.address)

    # A write applied by the source before the move, whose reply the client "lost".
    status, body = await to_a(Op.INCRBY, IncrBy(retried, 1), request_id=(7 << 32) | 1)
    assert (status, body) == (Status.OK, IntReply(1))

    # The copy goes in the order GETKEYSINSLOT lists the keys: act on the last ones.
    order = ra.execute_command("CLUSTER", "GETKEYSINSLOT", SLOT, 100)
    late = [k for k in order if k in keys][-6:]
    run = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [SLOT],
            keyspace=p.keyspace,
            options=MigrationOptions(batch=2, rate=20, grace=0, poll=0.05),
        )
    )
    incoming = p.target.target._slots  # the target's bookkeeping, observed
    await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
    assert not set(late) & incoming[SLOT].authoritative  # not copied yet

    # Frozen source: only double reads are served.
    assert (await to_a(Op.SET, Set(late[0], b"x")))[0] == Status.WRONG_OWNER
    assert (await to_a(Op.GET, Get(late[0])))[0] == Status.WRONG_OWNER
    assert (await to_a(Op.SET, Set(late[0], b"x"), flags=DR_OWNER))[0] == Status.WRONG_OWNER
    old = {k: b"old%d" % i for i, k in enumerate(keys)}
    assert await to_a(Op.GET, Get(late[0]), flags=DR_OWNER) == (Status.OK, ValueReply(old[late[0]]))

    # The target, mid-copy.
    assert (await to_b(Op.GET, Get(late[0]), flags=DR_TARGET))[0] == Status.MISS
    assert await to_b(Op.SET, Set(late[0], b"new"), flags=W) == (Status.OK, SetReply(True))
    assert await to_b(Op.DEL, Delete(late[1]), flags=W) == (Status.OK, CountReply(1))
    assert await to_b(Op.INCRBY, IncrBy(counter, 5), flags=W) == (Status.OK, IntReply(105))
    nx = Set(late[2], b"nx", condition=SetCondition.NX)
    assert await to_b(Op.SET, nx, flags=W) == (Status.OK, SetReply(False))
    assert await to_b(Op.GET, Get(late[0]), flags=DR_TARGET) == (Status.OK, ValueReply(b"new"))
    deleted = await to_b(Op.GET, Get(late[1]), flags=DR_TARGET)
    assert deleted[0] == Status.NOT_FOUND  # a tombstone is an authoritative answer
    mget = await to_b(Op.MGET, MGet((late[3], late[4], late[1])), flags=DR_TARGET)
    assert mget == (Status.OK, MGetReply((old[late[3]], old[late[4]], None)))
    # A double read of a key written here while a request waits on that key (an MGET that
    # pulls its other key): the target is authoritative for it all the same. A MISS would
    # make the client take the source's frozen, older value.
    to_b.peer.send(
        encode_request(Op.MGET, 2001, KEYSPACE, SLOT, MGet((late[0], late[5])), DR_TARGET),
        to_b.address,
    )
    chains = p.target.target._requests.chains  # observed: the MGET waits on its pull
    await until(lambda: late[0] in chains, timeout=3, interval=0)
    to_b.peer.send(
        encode_request(Op.GET, 2002, KEYSPACE, SLOT, Get(late[0]), DR_TARGET), to_b.address
    )
    both = {}
    for _ in range(2):
        msg = decode((await to_b.peer.recv(3.0))[0])
        both[msg.header.request_id] = (msg.header.status, msg.body)
    assert both[2002] == (Status.OK, ValueReply(b"new"))
    assert both[2001] == (Status.OK, MGetReply((b"new", old[late[5]])))
    # The retry of the write the source applied is answered from the source's ids, not applied.
    retry = W | Flag.RETRY
    again = await to_b(Op.INCRBY, IncrBy(retried, 1), flags=retry, request_id=(7 << 32) | 1)
    assert again == (Status.OK, IntReply(1))
    assert p.target.target.counters["target_pulls"] >= 3  # DEL, SET NX and MGET of late keys

    result = await asyncio.wait_for(run, 30)
    assert result.state == "FINALIZED"
    # Writes won over the copy that came later; the delete stayed; INCRBY applied once on the
    # pulled value; the retried INCRBY was not applied a second time.
    assert rb.get(late[0]) == b"new"
    assert not rb.exists(late[1])
    assert rb.get(counter) == b"105"
    assert rb.get(late[2]) == old[late[2]]
    assert rb.get(retried) == b"1"
    for k in keys:
        if k not in late[:2]:
            assert rb.get(k) == old[k]
    assert p.target.target.counters["target_keys_skipped_dirty"] >= 2
    # Finalize removed the slot's keys at the source.
    assert [k for k in ra.scan_iter() if not is_reserved(k)] == []
    # After the move the target serves the slot as its owner.
    assert await to_b(Op.INCRBY, IncrBy(retried, 1)) == (Status.OK, IntReply(2))
