"""Issue #12, item 3: at-most-once across the handover for every write the source may have
applied. An INCRBY applied at the source whose reply was lost, and which the source's window
no longer remembers (evicted by other clients' writes, or forgotten because the answer was BUSY
after a dropped Redis connection although Redis applied it), is retried after the flip at the
target: the target answers it from the source's Redis record instead of applying it again."""

from __future__ import annotations

import asyncio

import pytest
from migration_helpers import KEYSPACE, keys_in, until

from netmigrate import migration
from netmigrate.agent.dedup import fingerprint
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.codec import IncrBy, IntReply, decode, encode_request
from netmigrate.protocol.constants import Flag, Op, Status

SLOT = 903
OTHER_SLOT = 904
RID = (0x0DD5 << 32) | 5


@pytest.mark.parametrize("forgotten_by", ["eviction", "busy_after_drop"])
async def test_a_write_the_window_forgot_is_not_applied_twice_after_the_flip(
    pair, udp_peer, forgotten_by: str
) -> None:
    p = await pair(dedup_entries=8, dedup_per_client=8)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    (counter,) = keys_in(SLOT, 1, "n")
    for k in keys_in(SLOT, 30):  # keeps the slot migrating (rate 20 keys/s) while observed
        ra.set(k, b"v")
    peer = await udp_peer()

    async def call(datagram: bytes, address) -> tuple[int, object]:  # type: ignore[no-untyped-def]
        peer.send(datagram, address)
        msg = decode((await peer.recv(3.0))[0])
        assert msg.header.request_id == decode(datagram).header.request_id
        return msg.header.status, msg.body

    write = encode_request(Op.INCRBY, RID, KEYSPACE, SLOT, IncrBy(counter, 5))
    # Applied at the source; the client "lost" this reply.
    assert await call(write, p.source.address) == (Status.OK, IntReply(5))
    entry = p.source.dedup.get(RID)
    assert entry is not None and entry.fingerprint == fingerprint(write)
    if forgotten_by == "eviction":
        # Other clients' writes push the id out of the (small) window.
        for i, k in enumerate(keys_in(OTHER_SLOT, 20)):
            other = encode_request(
                Op.INCRBY, ((0x1000 + i) << 32) | 1, KEYSPACE, OTHER_SLOT, IncrBy(k, 1)
            )
            assert (await call(other, p.source.address))[0] == Status.OK
    else:
        # What the data path does when the connection to Redis drops before the answer.
        p.source.dedup.forget(entry)
    assert p.source.dedup.get(RID) is None
    assert ra.get(counter) == b"5"

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
    retry = encode_request(
        Op.INCRBY, RID, KEYSPACE, SLOT, IncrBy(counter, 5), int(Flag.TO_TARGET | Flag.RETRY)
    )
    assert await call(retry, p.target.address) == (Status.OK, IntReply(5))
    result = await asyncio.wait_for(run, 30)
    assert result.state == "FINALIZED"
    assert rb.get(counter) == b"5"
