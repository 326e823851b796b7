"""How the run phase's workers are split over load-generator processes (no processes here)."""

from __future__ import annotations

from netmigrate.bench import loadprocs


def test_workers_are_split_evenly_and_no_process_is_empty() -> None:
    assert loadprocs.split(16, 3) == [6, 5, 5]
    assert loadprocs.split(2, 4) == [1, 1]
    assert loadprocs.split(5, 1) == [5]


def test_each_process_has_its_own_writer_seed_and_share_of_the_rate() -> None:
    plans = loadprocs.plans(
        workload="A", records=100, value_size=64, seed=3, expected_ops=1000, concurrency=16,
        rate=1600.0, bin_ms=100, processes=4, first_writer=2,
    )  # fmt: skip
    assert [p.writer for p in plans] == [2, 3, 4, 5]
    assert len({p.seed for p in plans}) == 4 and all(p.value_seed == 3 for p in plans)
    assert [p.rate for p in plans] == [400.0] * 4
    assert sum(p.concurrency for p in plans) == 16
