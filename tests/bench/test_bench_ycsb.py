"""YCSB generators: key names, zipfian skew, scrambling, latest, operation mixes, determinism."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from netmigrate.bench.ycsb import (
    INSERT,
    READ,
    RMW,
    SCRAMBLED_ZETAN,
    UPDATE,
    WORKLOADS,
    AcknowledgedCounter,
    OperationStream,
    ScrambledZipfianGenerator,
    ZipfianGenerator,
    fnvhash64,
    java_mod,
    key_name,
    workload,
    zeta,
)
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """Bounds on a share of ``n`` draws with probability ``p`` (normal approximation)."""
    sd = math.sqrt(p * (1 - p) / n)
    return p - sigmas * sd, p + sigmas * sd


def test_key_names_match_ycsb() -> None:
    # The first keys of every YCSB load with insertorder=hashed (published in YCSB outputs).
    assert key_name(0) == b"user6284781860667377211"
    assert key_name(1) == b"user8517097267634966620"
    assert key_name(2) == b"user1820151046732198393"


def test_fnvhash64_is_non_negative_java_long() -> None:
    values = [fnvhash64(v) for v in range(10_000)]
    assert all(0 <= v < 2**63 for v in values)
    assert len(set(values)) == len(values)


def test_java_mod_keeps_sign_of_dividend() -> None:
    assert java_mod(7, 3) == 1
    assert java_mod(-7, 3) == -1
    assert java_mod(-(2**63), 10) == -8


def test_zeta_matches_direct_sum_for_both_code_paths() -> None:
    direct = sum(1 / i**0.99 for i in range(1, 10_001))
    assert zeta(0, 10_000, 0.99) == pytest.approx(direct, rel=1e-12)
    assert zeta(0, 100, 0.99) == pytest.approx(sum(1 / i**0.99 for i in range(1, 101)))
    # Incremental form used when the item count grows.
    assert zeta(100, 10_000, 0.99, zeta(0, 100, 0.99)) == pytest.approx(direct, rel=1e-12)


def test_zipfian_head_probabilities_follow_the_algorithm() -> None:
    n_items, draws = 1000, 200_000
    gen = ZipfianGenerator(n_items, random.Random(7))
    counts = Counter(gen.next() for _ in range(draws))
    assert min(counts) >= 0 and max(counts) < n_items
    zetan = zeta(0, n_items, 0.99)
    # Gray et al.: item 0 with probability 1/zetan, item 1 with 0.5^theta / zetan.
    for item, p in ((0, 1 / zetan), (1, 0.5**0.99 / zetan)):
        lo, hi = binomial_bounds(draws, p)
        assert lo <= counts[item] / draws <= hi, (item, counts[item] / draws, p)
    # Skew: the 10 most popular items get far more than the 1% uniform would give them.
    top10 = sum(c for _, c in counts.most_common(10)) / draws
    assert 0.30 < top10 < 0.50


def test_zipfian_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        ZipfianGenerator(0, random.Random(1))
    with pytest.raises(ValueError, match="zipfian constant"):
        ZipfianGenerator(10, random.Random(1), theta=1.0)


def test_scrambled_zipfian_hottest_key_share_and_spread() -> None:
    records, draws = 10_000, 200_000
    gen = ScrambledZipfianGenerator(0, records - 1, random.Random(11))
    counts = Counter(gen.next() for _ in range(draws))
    assert all(0 <= k < records for k in counts)
    hottest_share = counts.most_common(1)[0][1] / draws
    # Rank 0 of the 10^10-item zipfian has probability 1/ZETAN = 3.78%; folding 10^10 items
    # onto 10^4 keys adds the (tiny) mass of colliding items.
    p0 = 1 / SCRAMBLED_ZETAN
    lo, hi = binomial_bounds(draws, p0)
    assert lo <= hottest_share <= hi + 0.005
    # Popular keys are scattered, not clustered at low key numbers.
    top = [k for k, _ in counts.most_common(20)]
    assert max(top) - min(top) > records // 2
    deciles = Counter(k * 10 // records for k in counts.elements())
    assert all(0.04 < deciles[d] / draws < 0.20 for d in range(10)), deciles


def test_scrambled_keys_spread_over_the_slots() -> None:
    """Half of the slots get roughly half of the requests (what a migration moves)."""
    records, draws = 20_000, 100_000
    stream = OperationStream(workload("C"), records, seed=3)
    low = sum(key_slot(key_name(stream.next_keynum())) < SLOT_COUNT // 2 for _ in range(draws))
    assert 0.35 < low / draws < 0.65
    slots = {key_slot(key_name(k)) for k in range(records)}
    assert len(slots) > 11_000  # 20k hashed names cover most of the 16384 slots


@pytest.mark.parametrize(
    ("name", "op", "share"),
    [("A", READ, 0.5), ("A", UPDATE, 0.5), ("B", READ, 0.95), ("B", UPDATE, 0.05),
     ("D", READ, 0.95), ("D", INSERT, 0.05), ("F", READ, 0.5), ("F", RMW, 0.5)],
)  # fmt: skip
def test_operation_mix(name: str, op: int, share: float) -> None:
    draws = 50_000
    stream = OperationStream(workload(name), 1000, seed=5)
    ops = Counter(stream.next_op() for _ in range(draws))
    lo, hi = binomial_bounds(draws, share)
    assert lo <= ops[op] / draws <= hi
    assert set(ops) <= {READ, UPDATE, INSERT, RMW}


def test_workload_c_is_read_only() -> None:
    stream = OperationStream(workload("C"), 1000, seed=5)
    assert {stream.next()[0] for _ in range(5000)} == {READ}


def test_streams_are_deterministic_per_seed() -> None:
    for name in WORKLOADS:
        a = OperationStream(workload(name), 5000, seed=42)
        b = OperationStream(workload(name), 5000, seed=42)
        c = OperationStream(workload(name), 5000, seed=43)
        seq_a = [a.next() for _ in range(2000)]
        assert seq_a == [b.next() for _ in range(2000)]
        assert seq_a != [c.next() for _ in range(2000)]


def test_acknowledged_counter_only_exposes_contiguous_acks() -> None:
    c = AcknowledgedCounter(100)
    assert c.last == 99
    k1, k2 = c.next(), c.next()
    assert (k1, k2) == (100, 101)
    c.acknowledge(k2)
    assert c.last == 99  # 100 not acknowledged yet
    c.acknowledge(k1)
    assert c.last == 101


def test_latest_favours_recent_inserts_and_never_returns_unacked_keys() -> None:
    records = 10_000
    stream = OperationStream(workload("D"), records, seed=9)
    inserted: list[int] = []
    pending: int | None = None
    reads: list[tuple[int, int]] = []  # (keynum, last acknowledged key at the time)
    for _ in range(60_000):
        op, keynum = stream.next()
        if op == INSERT:
            inserted.append(keynum)
            if pending is not None:
                stream.acknowledge_insert(pending)
            pending = keynum  # acknowledged one insert later: in flight meanwhile
        else:
            last = stream.inserts.last
            assert keynum <= last, "read a key whose insert is not acknowledged"
            assert pending is None or keynum != pending
            reads.append((keynum, last))
    assert inserted == list(range(records, records + len(inserted)))
    distance = [last - k for k, last in reads]
    recent = sum(d < 10 for d in distance) / len(distance)
    # Uniform reads would hit the 10 newest keys 0.1% of the time; zipfian(0.99) ~ 1/3.
    assert recent > 0.25
    assert Counter(distance).most_common(1)[0][0] in (0, 1)


def test_unknown_workload_and_too_few_records() -> None:
    with pytest.raises(ValueError, match="unknown workload 'Z'"):
        workload("Z")
    assert workload("b").name == "B"
    with pytest.raises(ValueError, match="at least 2 records"):
        OperationStream(workload("A"), 1, seed=1)


def test_generator_speed(benchmark) -> None:
    """The stream must outrun any client by far (measured; CI runs it once)."""
    stream = OperationStream(workload("A"), 100_000, seed=1)

    def draw_10k() -> None:
        nxt = stream.next
        for _ in range(10_000):
            nxt()

    benchmark(draw_10k)
