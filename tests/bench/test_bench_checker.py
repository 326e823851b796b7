"""The write checker: what counts as stale, foreign, corrupt or missing."""

from __future__ import annotations

import pytest

from netmigrate.bench.checker import MIN_VALUE_SIZE, ValueFactory, WriteChecker, parse_value


@pytest.fixture
def vf() -> ValueFactory:
    return ValueFactory(64, seed=1)


def test_values_have_the_exact_size_and_name_their_write(vf: ValueFactory) -> None:
    v = vf.make(123, 456789)
    assert len(v) == 64
    assert parse_value(v) == (123, 456789)
    assert parse_value(b"no colon here") is None
    assert parse_value(b"x:y:z") is None
    with pytest.raises(ValueError, match="at least"):
        ValueFactory(MIN_VALUE_SIZE - 1, seed=1)


def test_loaded_value_is_fine_until_a_newer_write_is_acknowledged(vf: ValueFactory) -> None:
    c = WriteChecker(10)
    loaded = vf.make(3, 3)
    assert c.check_read(3, loaded, c.begin_read(3))
    w = c.begin_write(3)
    snap_during = c.begin_read(3)
    c.end_write(w, True)
    # A read that began while the write was in flight may return either value.
    assert c.check_read(3, loaded, snap_during)
    assert c.check_read(3, vf.make(3, w), snap_during)
    # A read that begins after the acknowledgement must see the write.
    snap_after = c.begin_read(3)
    assert c.check_read(3, vf.make(3, w), snap_after)
    assert not c.check_read(3, loaded, snap_after)
    assert c.reads.stale == 1


def test_concurrent_writes_may_land_in_either_order(vf: ValueFactory) -> None:
    c = WriteChecker(10)
    w1 = c.begin_write(5)
    w2 = c.begin_write(5)
    c.end_write(w2, True)
    c.end_write(w1, True)
    snap = c.begin_read(5)
    assert c.check_read(5, vf.make(5, w1), snap)
    assert c.check_read(5, vf.make(5, w2), snap)
    # A third write that began after both acknowledgements supersedes both.
    w3 = c.begin_write(5)
    c.end_write(w3, True)
    snap = c.begin_read(5)
    assert not c.check_read(5, vf.make(5, w1), snap)
    assert not c.check_read(5, vf.make(5, w2), snap)
    assert c.check_read(5, vf.make(5, w3), snap)


def test_failed_write_has_unknown_outcome(vf: ValueFactory) -> None:
    c = WriteChecker(10)
    w = c.begin_write(1)
    c.end_write(w, False)
    snap = c.begin_read(1)
    assert c.check_read(1, vf.make(1, w), snap)  # may have been applied
    assert c.check_read(1, vf.make(1, 1), snap)  # or not


def test_foreign_corrupt_and_missing_values(vf: ValueFactory) -> None:
    c = WriteChecker(10)
    assert not c.check_read(2, vf.make(7, 7), c.begin_read(2))
    assert c.reads.foreign == 1
    assert not c.check_read(2, vf.make(2, 999_999), c.begin_read(2))  # never issued
    assert not c.check_read(2, b"garbage", c.begin_read(2))
    assert c.reads.corrupt == 2
    assert not c.check_read(2, None, c.begin_read(2))  # loaded key vanished
    assert c.reads.missing == 1
    w = c.begin_write(2)
    c.end_write(w, True)
    # An id that is an acknowledgement tick, not a write, is corrupt too.
    assert not c.check_read(2, vf.make(2, w + 1), c.begin_read(2))
    assert c.reads.violations == 5
    assert len(c.reads.examples) == 5


def test_insert_may_be_absent_until_acknowledged(vf: ValueFactory) -> None:
    c = WriteChecker(10)
    w = c.begin_write(10)  # a new key (workload D insert)
    snap = c.begin_read(10)
    assert c.check_read(10, None, snap)
    c.end_write(w, True)
    assert not c.check_read(10, None, c.begin_read(10))
    assert c.check_read(10, vf.make(10, w), c.begin_read(10))
    assert c.known_keys() == 11


def test_final_sweep_reports_lost_write(vf: ValueFactory) -> None:
    c = WriteChecker(4)
    w = c.begin_write(0)
    c.end_write(w, True)
    values = [vf.make(0, 0), vf.make(1, 1), vf.make(2, 2), None]
    counts = c.check_final([0, 1, 2, 3], values)
    assert (counts.checked, counts.stale, counts.missing) == (4, 1, 1)
    assert counts.as_dict()["violations"] == 2
