"""YCSB core workloads A, B, C, D and F as fast, seeded, pure-Python generators.

The generators follow YCSB's own algorithms (``site.ycsb.generator``) so a run here draws keys
with the same skew as a YCSB run with the same parameters:

* :class:`ZipfianGenerator` is Gray et al.'s "Quickly generating billion-record synthetic
  databases" method that YCSB uses, including its quirks (``eta`` keeps the item count of the
  constructor when the count grows, item ``base + 1`` is special-cased);
* :class:`ScrambledZipfianGenerator` draws from a zipfian over 10^10 items (with YCSB's
  precomputed zeta) and scatters the popular items over the keyspace with FNV-1a 64;
* :class:`SkewedLatestGenerator` favours the most recently acknowledged insert;
* key names are YCSB's: ``"user" + str(fnvhash64(keynum))`` (``insertorder=hashed``).

Simplification (documented in docs/benchmarks.md): a record is one value of ``value_size``
bytes under one key, not YCSB's ten fields of 100 bytes, because every peer (Redis Cluster,
stop-and-copy, NetMigrate) moves opaque string values and the wire protocol carries one value
per key. Workload F's read-modify-write is a GET followed by a SET of the same key, timed as one
operation as YCSB does.

Determinism: with the same seed the generator yields the same sequence of operations and keys.
Workload D's "latest" keys additionally depend on which inserts have been acknowledged, which
depends on timing, exactly as in YCSB.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

#: Operation codes of a workload (indices into :data:`OP_NAMES`).
READ: Final = 0
UPDATE: Final = 1
INSERT: Final = 2
RMW: Final = 3
OP_NAMES: Final = ("read", "update", "insert", "rmw")

ZIPFIAN_CONSTANT: Final = 0.99
#: YCSB's ScrambledZipfianGenerator draws from this many items with this precomputed zeta.
SCRAMBLED_ITEM_COUNT: Final = 10_000_000_000
SCRAMBLED_ZETAN: Final = 26.46902820178302

_FNV_OFFSET_BASIS_64: Final = 0xCBF29CE484222325
_FNV_PRIME_64: Final = 1099511628211
_MASK64: Final = (1 << 64) - 1
_SIGN64: Final = 1 << 63


def fnvhash64(val: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the 8 low bytes, Java ``long`` semantics.

    Java multiplies in signed 64-bit and returns ``Math.abs`` of the result, which is still
    negative for ``Long.MIN_VALUE``; both are reproduced so key names match YCSB's exactly.
    """
    h = _FNV_OFFSET_BASIS_64
    v = val & _MASK64
    for _ in range(8):
        h = ((h ^ (v & 0xFF)) * _FNV_PRIME_64) & _MASK64
        v >>= 8
    if h & _SIGN64:
        h -= 1 << 64  # to signed
        if h != -_SIGN64:
            h = -h
    return h


def java_mod(a: int, n: int) -> int:
    """Java's ``%`` (sign of the dividend), for the one hash value ``abs`` leaves negative."""
    r = abs(a) % n
    return -r if a < 0 else r


def key_name(keynum: int) -> bytes:
    """YCSB's ``buildKeyName`` with hashed insert order and no zero padding."""
    return b"user%d" % fnvhash64(keynum)


def zeta(start: int, n: int, theta: float, initial: float = 0.0) -> float:
    """``sum(1 / i**theta for i in start+1 .. n) + initial`` (YCSB's ``zetastatic``)."""
    if n - start > 4096:
        # numpy only for big sums: one import, then ~100x faster than a Python loop.
        import numpy as np

        i = np.arange(start + 1, n + 1, dtype=np.float64)
        return initial + float(np.sum(1.0 / np.power(i, theta)))
    total = initial
    for i in range(start + 1, n + 1):
        total += 1.0 / math.pow(i, theta)
    return total


class ZipfianGenerator:
    """Zipfian over ``[base, base + items)``; item ``base`` is the most popular."""

    def __init__(
        self,
        items: int,
        rng: random.Random,
        *,
        base: int = 0,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if items < 1:
            raise ValueError(f"zipfian needs at least one item, got {items}")
        if not 0.0 < theta < 1.0:
            raise ValueError(f"zipfian constant must be in (0, 1), got {theta}")
        self.items = items
        self.base = base
        self.theta = theta
        self._rand = rng.random
        self._zeta2 = zeta(0, 2, theta)
        self._alpha = 1.0 / (1.0 - theta)
        self._zetan = zeta(0, items, theta) if zetan is None else zetan
        self._count_for_zeta = items
        self._half_pow_theta = math.pow(0.5, theta)
        self._eta = self._compute_eta()

    def _compute_eta(self) -> float:
        # YCSB keeps the constructor's item count here even when nextLong's count grows.
        return (1.0 - math.pow(2.0 / self.items, 1.0 - self.theta)) / (
            1.0 - self._zeta2 / self._zetan
        )

    @property
    def zetan(self) -> float:
        return self._zetan

    def next_long(self, itemcount: int) -> int:
        """A draw over ``itemcount`` items (grown incrementally as in YCSB; never shrinks)."""
        if itemcount > self._count_for_zeta:
            self._zetan = zeta(self._count_for_zeta, itemcount, self.theta, self._zetan)
            self._count_for_zeta = itemcount
            self._eta = self._compute_eta()
        u = self._rand()
        uz = u * self._zetan
        if uz < 1.0:
            return self.base
        if uz < 1.0 + self._half_pow_theta:
            return self.base + 1
        eta = self._eta
        return self.base + int(itemcount * math.pow(eta * u - eta + 1.0, self._alpha))

    def next(self) -> int:
        return self.next_long(self.items)


class ScrambledZipfianGenerator:
    """Zipfian popularity scattered over ``[lo, hi]`` with FNV hashing (YCSB's default)."""

    def __init__(self, lo: int, hi: int, rng: random.Random) -> None:
        if hi < lo:
            raise ValueError(f"empty range [{lo}, {hi}]")
        self.lo = lo
        self.itemcount = hi - lo + 1
        # YCSB: ZipfianGenerator(0, ITEM_COUNT) spans ITEM_COUNT + 1 items.
        self._gen = ZipfianGenerator(
            SCRAMBLED_ITEM_COUNT + 1, rng, theta=ZIPFIAN_CONSTANT, zetan=SCRAMBLED_ZETAN
        )

    def next(self) -> int:
        return self.lo + java_mod(fnvhash64(self._gen.next()), self.itemcount)


class UniformGenerator:
    def __init__(self, lo: int, hi: int, rng: random.Random) -> None:
        self._lo, self._hi, self._randint = lo, hi, rng.randint

    def next(self) -> int:
        return self._randint(self._lo, self._hi)


class AcknowledgedCounter:
    """Insert key sequence whose ``last`` is the highest key below which every insert is acked.

    YCSB's AcknowledgedCounterGenerator: readers of "latest" only see keys whose insert (and
    every earlier one) has completed, so they never read a key that does not exist yet.
    """

    def __init__(self, start: int) -> None:
        self._next = start
        self._limit = start - 1
        self._acked: set[int] = set()

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value

    @property
    def last(self) -> int:
        return self._limit

    @property
    def issued(self) -> int:
        """How many key numbers exist (loaded or handed out for insert)."""
        return self._next

    def acknowledge(self, value: int) -> None:
        self._acked.add(value)
        limit = self._limit
        while limit + 1 in self._acked:
            limit += 1
            self._acked.discard(limit)
        self._limit = limit


class SkewedLatestGenerator:
    """YCSB's "latest": ``last - zipfian(last)``, so recent inserts are the most popular."""

    def __init__(self, basis: AcknowledgedCounter, rng: random.Random) -> None:
        self._basis = basis
        self._zipf = ZipfianGenerator(max(basis.last, 1), rng)

    def next(self) -> int:
        top = self._basis.last
        return top - self._zipf.next_long(max(top, 1))


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Operation mix and request distribution of one YCSB core workload."""

    name: str
    read: float
    update: float
    insert: float
    rmw: float
    distribution: str  # "zipfian" (scrambled) | "latest" | "uniform"
    description: str

    @property
    def proportions(self) -> tuple[float, float, float, float]:
        return (self.read, self.update, self.insert, self.rmw)

    @property
    def write_fraction(self) -> float:
        return self.update + self.insert + self.rmw


WORKLOADS: Final[dict[str, WorkloadSpec]] = {
    "A": WorkloadSpec("A", 0.5, 0.5, 0.0, 0.0, "zipfian", "update heavy: 50% read, 50% update"),
    "B": WorkloadSpec("B", 0.95, 0.05, 0.0, 0.0, "zipfian", "read mostly: 95% read, 5% update"),
    "C": WorkloadSpec("C", 1.0, 0.0, 0.0, 0.0, "zipfian", "read only"),
    "D": WorkloadSpec("D", 0.95, 0.0, 0.05, 0.0, "latest", "read latest: 95% read, 5% insert"),
    "F": WorkloadSpec(
        "F", 0.5, 0.0, 0.0, 0.5, "zipfian", "read-modify-write: 50% read, 50% read-modify-write"
    ),
}


def workload(name: str) -> WorkloadSpec:
    try:
        return WORKLOADS[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown workload {name!r}; choose one of {', '.join(sorted(WORKLOADS))}"
        ) from None


class OperationStream:
    """The (operation, key number) sequence of a workload's run phase.

    ``records`` keys (0 .. records-1) exist after the load phase. ``expected_ops`` sizes the
    zipfian range for inserts exactly as YCSB's ``operationcount * insertproportion * 2``.
    """

    def __init__(
        self,
        spec: WorkloadSpec,
        records: int,
        *,
        seed: int,
        expected_ops: int = 1_000_000,
    ) -> None:
        if records < 2:
            raise ValueError(f"need at least 2 records, got {records}")
        self.spec = spec
        self.records = records
        rng = random.Random(seed)
        self._rand = rng.random
        self.inserts = AcknowledgedCounter(records)
        cumulative: list[tuple[float, int]] = []
        total = 0.0
        for op, share in enumerate(spec.proportions):
            if share > 0:
                total += share
                cumulative.append((total, op))
        self._ops = tuple(cumulative)
        self._ops_total = total
        self._single_op = cumulative[0][1] if len(cumulative) == 1 else None
        expected_new = int(expected_ops * spec.insert * 2.0)
        if spec.distribution == "zipfian":
            self._chooser: ScrambledZipfianGenerator | SkewedLatestGenerator | UniformGenerator = (
                ScrambledZipfianGenerator(0, records + expected_new, rng)
            )
        elif spec.distribution == "latest":
            self._chooser = SkewedLatestGenerator(self.inserts, rng)
        elif spec.distribution == "uniform":
            self._chooser = UniformGenerator(0, records + expected_new - 1, rng)
        else:
            raise ValueError(f"unknown request distribution {spec.distribution!r}")

    def next_op(self) -> int:
        if self._single_op is not None:
            return self._single_op
        x = self._rand() * self._ops_total
        for bound, op in self._ops:
            if x < bound:
                return op
        return self._ops[-1][1]

    def next_keynum(self) -> int:
        """A key that exists (YCSB re-draws key numbers beyond the last acknowledged insert)."""
        last = self.inserts.last
        nxt = self._chooser.next
        keynum = nxt()
        while keynum > last:
            keynum = nxt()
        return keynum

    def next(self) -> tuple[int, int]:
        op = self.next_op()
        if op == INSERT:
            return op, self.inserts.next()
        return op, self.next_keynum()

    def acknowledge_insert(self, keynum: int) -> None:
        self.inserts.acknowledge(keynum)


class KeyNames:
    """Key number -> key bytes, memoised (the load phase touches every key anyway)."""

    def __init__(self) -> None:
        self._names: list[bytes] = []

    def __len__(self) -> int:
        """Key numbers 0..n-1 named so far: every key loaded or written (or read)."""
        return len(self._names)

    def __call__(self, keynum: int) -> bytes:
        names = self._names
        if keynum < len(names):
            return names[keynum]
        for k in range(len(names), keynum + 1):
            names.append(key_name(k))
        return names[keynum]
