"""A key is authoritative at the target only once its write succeeded in Redis (issue #12.2).

Scenario on a real agent and a real Redis: a slot migrates in, the target's Redis refuses a
client's write (OOM under ``maxmemory`` with ``noeviction``). The write is not acknowledged, so
the key must stay non-authoritative: a double read answers MISS (the client takes the source's
value, which is current), and a read-modify-write still pulls the source's value first instead
of starting from nothing.
"""

from __future__ import annotations

import grpc

from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent.reserved import slot_tag
from netmigrate.protocol.codec import Control, Get, Header, IncrBy, Set, decode, encode
from netmigrate.protocol.constants import Flag, Op, Status

KEYSPACE = 50000
SOURCE, TARGET = 1, 2
SLOT = 777
KEY = b"{" + slot_tag(SLOT) + b"}:counter"


async def test_a_refused_write_leaves_the_key_non_authoritative(raw_agent, cluster_redis) -> None:
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
        stub = control_pb2_grpc.AgentControlStub(channel)
        # No source answers pulls at this address: a pull fails (BUSY), it never invents a value.
        await stub.TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                source_id=SOURCE,
                slots=[control_pb2.SlotRequestIds(slot=SLOT)],
                source_control="127.0.0.1:1",
            ),
            timeout=5,
        )

    r = cluster_redis.client()
    policy = r.config_get("maxmemory-policy")["maxmemory-policy"]
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        refused = await rpc(Op.SET, Set(KEY, b"v2"), flags=Flag.TO_TARGET)
        assert refused.header.status != Status.OK, "Redis refused the write: no acknowledgement"
    finally:
        r.config_set("maxmemory", 0)
        r.config_set("maxmemory-policy", policy)
    assert not r.exists(KEY)

    read = await rpc(Op.GET, Get(KEY), flags=Flag.DOUBLE_READ | Flag.TO_TARGET)
    assert read.header.status == Status.MISS, (
        "the target has no value for the key: only the source's answer is current"
    )
    incr = await rpc(Op.INCRBY, IncrBy(KEY, 5), flags=Flag.TO_TARGET)
    assert incr.header.status != Status.OK, "the source's value was never pulled"
    assert not r.exists(KEY)
