"""Slot heat and the order a migration's waves take from it (unit tests: no Redis; the data
path's Redis connection is a stub that only says it is open)."""

from __future__ import annotations

from types import SimpleNamespace

from netmigrate.agent.datapath import DataPath
from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.heat import SlotHeat
from netmigrate.agent.reserved import RESERVED_SLOT
from netmigrate.agent.slots import SlotTable
from netmigrate.agent.source.waves import WAVE_KEYS, form_waves
from netmigrate.agent.stats import AgentStats
from netmigrate.protocol.codec import Get, encode_request
from netmigrate.protocol.constants import SLOT_COUNT, Op
from netmigrate.protocol.slot import key_slot

KEYSPACE = 7


def heat_of(counts: dict[int, int]) -> SlotHeat:
    heat = SlotHeat()
    for slot, n in counts.items():
        heat.counts[slot] = n
    return heat


def test_a_cold_keyspace_keeps_the_ascending_order() -> None:
    slots = [9, 3, 100, 0, 42]
    assert SlotHeat().hottest_first(slots) == [0, 3, 9, 42, 100]


def test_hottest_first_and_ties_in_ascending_order() -> None:
    heat = heat_of({50: 7, 10: 3, 30: 3, 90: 100})
    assert heat.hottest_first(range(0, 100, 10)) == [90, 50, 10, 30, 0, 20, 40, 60, 70, 80]


def test_decay_halves_in_place() -> None:
    heat = heat_of({1: 9, 2: 1, 3: 0})
    counts = heat.counts
    heat.decay()
    # The data path holds this very list: decay must not replace it.
    assert heat.counts is counts
    assert counts[1:4] == [4, 0, 0]
    assert len(counts) == SLOT_COUNT


def test_waves_keep_the_heat_order() -> None:
    slots = list(range(100, 120))
    heat = heat_of({117: 50, 103: 40, 111: 40, 119: 1})
    order = heat.hottest_first(slots)
    waves = form_waves(order, [1] * len(order), 4)
    assert waves[0] == [117, 103, 111, 119]
    assert waves[1] == [100, 101, 102, 104]
    assert [s for w in waves for s in w] == order


def test_the_reserved_slot_goes_alone_at_its_heat() -> None:
    """The reserved slot holds the agent's records: its key count (COUNTKEYSINSLOT) is large,
    so it forms a wave of its own, wherever its client load ranks it."""
    slots = [RESERVED_SLOT - 2, RESERVED_SLOT - 1, RESERVED_SLOT, RESERVED_SLOT + 1]
    counts_of = {s: 1 for s in slots} | {RESERVED_SLOT: WAVE_KEYS + 10}
    cold = SlotHeat().hottest_first(slots)
    assert form_waves(cold, [counts_of[s] for s in cold], 8) == [
        [RESERVED_SLOT - 2, RESERVED_SLOT - 1],
        [RESERVED_SLOT],
        [RESERVED_SLOT + 1],
    ]
    hot = heat_of({RESERVED_SLOT: 5, RESERVED_SLOT + 1: 9}).hottest_first(slots)
    assert form_waves(hot, [counts_of[s] for s in hot], 8) == [
        [RESERVED_SLOT + 1],
        [RESERVED_SLOT],
        [RESERVED_SLOT - 2, RESERVED_SLOT - 1],
    ]


def datapath(heat: SlotHeat) -> DataPath:
    dp = DataPath(
        keyspace=KEYSPACE,
        server_id=1,
        table=SlotTable(frozenset(range(SLOT_COUNT))),
        dedup=DedupWindow(max_entries=1 << 20, max_per_client=1 << 20, max_bytes=1 << 30),
        stats=AgentStats(),
        max_datagram=1400,
        max_batch=64,
        heat=heat,
    )
    dp.redis = SimpleNamespace(is_open=True)  # type: ignore[assignment]
    return dp


def get(request_id: int, key: bytes) -> bytes:
    return encode_request(Op.GET, request_id, KEYSPACE, key_slot(key), Get(key))


def test_the_data_path_counts_requests_per_slot_once_per_request_id() -> None:
    heat = SlotHeat()
    dp = datapath(heat)
    commands: list[bytes] = []
    callbacks: list[object] = []
    addr = ("127.0.0.1", 9)
    for i in range(3):
        dp._handle(get(i + 1, b"hot"), addr, commands, callbacks)
    dp._handle(get(10, b"cold"), addr, commands, callbacks)
    dp._handle(get(1, b"hot"), addr, commands, callbacks)  # a retry: no new load
    assert len(commands) == 4  # every first request went to Redis
    assert heat.counts[key_slot(b"hot")] == 3
    assert heat.counts[key_slot(b"cold")] == 1
    assert sum(heat.counts) == 4
