"""The slot-set module: spec parsing and formatting, range arithmetic, runs and diffs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmigrate.protocol import slotset
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slotset import SlotSetError

slot_sets = st.sets(st.integers(0, SLOT_COUNT - 1), max_size=200)


def test_parse_keywords_slots_and_ranges() -> None:
    assert slotset.parse("none") == frozenset()
    assert slotset.parse(" ALL ") == slotset.parse("0-16383") == frozenset(range(SLOT_COUNT))
    assert slotset.parse("0-2, 7,10-11") == {0, 1, 2, 7, 10, 11}
    assert slotset.parse("0-4095,8000") == set(range(4096)) | {8000}
    assert slotset.parse("3,1-3") == {1, 2, 3}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5-2", "'5-2' is not within 0-16383 (LO <= HI)"),
        ("16384", "'16384' is not within 0-16383 (LO <= HI)"),
        ("0-16384", "'0-16384' is not within 0-16383 (LO <= HI)"),
        ("-1", "'-1' is not a slot or a range LO-HI"),
        ("a-b", "'a-b' is not a slot or a range LO-HI"),
        ("1,,2", "'' is not a slot or a range LO-HI"),
        ("", "'' is not a slot or a range LO-HI"),
        ("1-2-3", "'1-2-3' is not a slot or a range LO-HI"),
        ("everything", "'everything' is not a slot or a range LO-HI"),
    ],
)
def test_malformed_specs_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(SlotSetError) as info:
        slotset.parse(spec)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_check_range() -> None:
    assert slotset.check_range(3, 5) == range(3, 6)
    assert slotset.check_range(16383, 16383) == range(16383, 16384)
    for first, last in ((5, 3), (-1, 0), (0, 16384)):
        with pytest.raises(SlotSetError, match=f"slot range {first}-{last} is not within 0-16383"):
            slotset.check_range(first, last)


def test_ranges_and_formatting() -> None:
    assert slotset.to_ranges([5, 1, 2, 3, 9, 3]) == [(1, 3), (5, 5), (9, 9)]
    assert slotset.to_ranges([]) == []
    assert slotset.format_ranges([(0, 2), (10, 10), (16383, 16383)]) == "0-2,10,16383"
    assert slotset.format_ranges([]) == "none"
    assert slotset.format_slots(range(SLOT_COUNT)) == "0-16383"
    assert slotset.from_ranges([(1, 3), (7, 7)]) == {1, 2, 3, 7}
    assert slotset.ranges_where(lambda s: s % 8192 < 2) == [(0, 1), (8192, 8193)]


def test_missing() -> None:
    assert slotset.missing(range(SLOT_COUNT)) == []
    assert slotset.missing(set()) == [(0, 16383)]
    owned = set(range(1, 16383)) - {500}
    assert slotset.missing(owned) == [(0, 0), (500, 500), (16383, 16383)]


@given(slot_sets)
def test_format_and_parse_round_trip(slots: set[int]) -> None:
    assert slotset.parse(slotset.format_slots(slots)) == slots
    ranges = slotset.to_ranges(slots)
    assert slotset.from_ranges(ranges) == slots
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))
    assert slotset.ranges_where(slots.__contains__) == ranges
    assert slotset.from_ranges(slotset.missing(slots)) == set(range(SLOT_COUNT)) - slots


def test_runs_and_diff() -> None:
    values = {0: "a", 1: "a", 2: "b", 4: "b", 5: "b"}
    assert slotset.runs(values) == [(0, 1, "a"), (2, 2, "b"), (4, 5, "b")]
    before = {0: 0, 1: 0, 2: 1, 3: 0, 4: 0}
    after = {0: 1, 1: 1, 2: 1, 3: 1, 4: 2}
    assert slotset.diff(before, after) == [(0, 1, 0, 1), (3, 3, 0, 1), (4, 4, 0, 2)]
    assert slotset.diff(before, before) == []
