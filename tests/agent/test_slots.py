"""SlotTable: the ownership question, ranges, and the persisted bitmap (Redis bit order)."""

from __future__ import annotations

import pytest

from netmigrate.agent import slot_store
from netmigrate.agent.reserved import AGENT_STATE_KEY, RESERVED_SLOT, is_reserved
from netmigrate.agent.slots import Admission, SlotState, SlotTable
from netmigrate.protocol.constants import Op
from netmigrate.protocol.slot import key_slot
from netmigrate.protocol.slotset import format_ranges


def test_admit_serves_owned_slots_only() -> None:
    table = SlotTable({3, 4})
    assert table.admit(3, Op.GET, 0) is Admission.SERVE
    assert table.admit(5, Op.SET, 0) is Admission.WRONG_OWNER
    table.set_state([5], SlotState.OWNED)
    table.set_state([3], SlotState.NOT_OWNED)
    assert table.admit(5, Op.SET, 0) is Admission.SERVE
    assert table.admit(3, Op.GET, 0) is Admission.WRONG_OWNER
    with pytest.raises(ValueError):
        table.set_state([16384], SlotState.OWNED)


def test_ranges_and_counts() -> None:
    table = SlotTable([0, 1, 2, 10, 16383])
    assert table.ranges(SlotState.OWNED) == [(0, 2), (10, 10), (16383, 16383)]
    assert table.count(SlotState.OWNED) == 5
    assert table.count(SlotState.NOT_OWNED) == 16379
    assert format_ranges(table.ranges(SlotState.OWNED)) == "0-2,10,16383"
    assert format_ranges([]) == "none"


def test_bitmap_round_trip_and_redis_bit_order(cluster_redis) -> None:
    owned = {0, 7, 8, 1000, 16383}
    table = SlotTable(owned)
    bitmap = table.owned_bitmap()
    assert len(bitmap) == 2048
    assert set(SlotTable.from_owned_bitmap(bitmap).slots_in(SlotState.OWNED)) == owned
    # Same bit numbering as Redis' GETBIT / BITCOUNT, so the stored value can be inspected.
    r = cluster_redis.client()
    r.set(b"bits", bitmap)
    assert r.bitcount(b"bits") == len(owned)
    assert [r.getbit(b"bits", s) for s in (0, 1, 7, 8, 9, 1000, 16383)] == [1, 0, 1, 1, 0, 1, 1]
    with pytest.raises(ValueError):
        SlotTable.from_owned_bitmap(b"\x00" * 10)


def test_reserved_keys_share_one_slot() -> None:
    assert key_slot(AGENT_STATE_KEY) == RESERVED_SLOT
    assert key_slot(b"{__netmigrate__}:anything") == RESERVED_SLOT
    assert is_reserved(AGENT_STATE_KEY) and not is_reserved(b"x{__netmigrate__}:y")


async def test_store_round_trip_and_identity(cluster_redis) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis(port=cluster_redis.port)
    try:
        assert await slot_store.load(client) is None
        await slot_store.save(client, 50000, 3, SlotTable(range(100, 200)))
        state = await slot_store.load(client)
        assert state is not None
        assert (state.keyspace, state.server_id) == (50000, 3)
        assert state.table.ranges(SlotState.OWNED) == [(100, 199)]
        slot_store.check_identity(state, 50000, 3)
        with pytest.raises(slot_store.AgentStateError, match="server 3"):
            slot_store.check_identity(state, 50000, 4)
        await client.hset(AGENT_STATE_KEY, b"format", b"9")
        with pytest.raises(slot_store.AgentStateError, match="format"):
            await slot_store.load(client)
        await client.hset(AGENT_STATE_KEY, mapping={b"format": b"1", b"owned": b"short"})
        with pytest.raises(slot_store.AgentStateError, match="damaged"):
            await slot_store.load(client)
    finally:
        await client.aclose()
