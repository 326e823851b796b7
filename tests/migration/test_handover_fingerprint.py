"""Issue #12, item 4, across the request-id handover: the fingerprint of a write the source
applied travels with its id to the target, into the target's window and its Redis record, so
that at the target, too, a retry gets the source's answer and a different request that drew the
same id is refused instead of being answered with it."""

from __future__ import annotations

import asyncio

from migration_helpers import KEYSPACE, keys_in, until

from netmigrate import migration
from netmigrate.agent.dedup import fingerprint, record_fingerprint
from netmigrate.agent.reserved import request_id_key
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.codec import IncrBy, IntReply, Set, decode, encode_request
from netmigrate.protocol.constants import Flag, Op, Status
from netmigrate.protocol.slot import key_slot

SLOT = 901
RID = (0x5EED << 32) | 77


async def test_the_target_knows_the_fingerprint_of_every_handed_over_id(pair, udp_peer) -> None:
    p = await pair()
    ra, rb = p.redis_a.client(), p.redis_b.client()
    keys = keys_in(SLOT, 30)
    for k in keys:
        ra.set(k, b"v")
    counter, other = keys_in(SLOT, 2, "n")
    peer = await udp_peer()

    async def call(datagram: bytes, address) -> tuple[int, object]:  # type: ignore[no-untyped-def]
        peer.send(datagram, address)
        msg = decode((await peer.recv(3.0))[0])
        assert msg.header.request_id == RID
        return msg.header.status, msg.body

    write = encode_request(Op.INCRBY, RID, KEYSPACE, SLOT, IncrBy(counter, 1))
    assert key_slot(counter) == SLOT
    assert await call(write, p.source.address) == (Status.OK, IntReply(1))
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
    entry = p.target.dedup.get(RID)
    assert entry is not None and entry.fingerprint == fingerprint(write)
    assert record_fingerprint(rb.get(request_id_key(RID))) == fingerprint(write)

    to_target = int(Flag.TO_TARGET)
    foreign = encode_request(Op.SET, RID, KEYSPACE, SLOT, Set(other, b"x"), to_target)
    status, body = await call(foreign, p.target.address)
    assert status == Status.ERROR and "collision" in body.message  # type: ignore[attr-defined]
    retry = encode_request(
        Op.INCRBY, RID, KEYSPACE, SLOT, IncrBy(counter, 1), to_target | Flag.RETRY
    )
    assert await call(retry, p.target.address) == (Status.OK, IntReply(1))
    result = await asyncio.wait_for(run, 30)
    assert result.state == "FINALIZED"
    assert rb.get(counter) == b"1" and rb.get(other) is None
