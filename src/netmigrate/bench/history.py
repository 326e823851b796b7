"""The history checker: the guarantees of a live migration (DESIGN section 6), checked.

One checker for every client history of the project: the migration tests, ``netmigrate bench
load`` (the demo and ``playbooks/bench.yml``) and the YCSB harness (``netmigrate bench run``,
200,000 keys and about a million operations per run) all record into :class:`History`.

Every client operation is recorded with its invocation and completion times (one system-wide
monotonic clock) and its result. After the run, :meth:`History.check` reports, per key:

- **lost writes**: acknowledged writes that the final state does not reflect although they
  definitely came after the write that survived;
- **stale reads**: reads that returned a value older than a write acknowledged before the read
  began (or a value nobody wrote);
- **duplicates**: counter keys whose final value is more than every increment applied once
  (a retried INCRBY applied twice), or whose increments returned the same value twice.

The model is a register per key (SET / DEL / GET) or a counter per key (INCRBY with delta 1).
Writers must write unique values: :func:`unique_value` makes them, :func:`value_token` finds the
token back in what a read returned.

The register check is the classic "no read of a value definitely overwritten" condition: a read
``R`` that returned the value of write ``W`` is stale if some acknowledged write ``X`` has
``X.inv > W.comp`` (``X`` began after ``W`` ended) and ``X.comp < R.inv`` (``X`` ended before
``R`` began). Writes with an unknown outcome (timeout, error) may take effect at any time after
their invocation, so they can explain any later read but prove nothing.

An operation keeps only its value's token (all the check compares), so a long run holds a few
dozen bytes per operation, not the values. Keys no operation touched during the run (most of a
large key space under a skewed workload) are checked by one comparison of their final value
with the initial one.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["set", "del", "get", "incr"]

#: Separates the unique token of a written value from its padding.
TOKEN_SEPARATOR = b"|"

now = time.monotonic


def unique_value(writer_id: int, seq: int, size: int = 0) -> bytes:
    """A value no other write produces: ``w<writer>:<seq>|`` padded to ``size`` bytes."""
    token = b"w%d:%d" % (writer_id, seq) + TOKEN_SEPARATOR
    return token + b"x" * max(0, size - len(token))


def value_token(value: bytes) -> bytes:
    return value.split(TOKEN_SEPARATOR, 1)[0]


#: Shortest value a :class:`ValueFactory` makes: room for the longest token of a large run.
MIN_VALUE_SIZE = 24


class ValueFactory:
    """Unique values (:func:`unique_value`'s token) of exactly ``size`` bytes, padded with
    seeded filler rather than one repeated byte: a padding that compresses would make the
    payloads of DUMP / MIGRATE (LZF in the RDB format) unrealistically small for the systems
    the benchmark compares."""

    def __init__(self, size: int, seed: int) -> None:
        if size < MIN_VALUE_SIZE:
            raise ValueError(f"value size must be at least {MIN_VALUE_SIZE} bytes, got {size}")
        self.size = size
        rng = random.Random(seed ^ 0x5EED)
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        self._filler = bytes(rng.choice(alphabet) for _ in range(size))

    def make(self, writer_id: int, seq: int) -> bytes:
        token = b"w%d:%d" % (writer_id, seq) + TOKEN_SEPARATOR
        return token + self._filler[: self.size - len(token)]


@dataclass(slots=True)
class Op:
    kind: Kind
    key: bytes
    #: The token (:func:`value_token`) of — set: the value written; get: the value returned
    #: (None: not found); del: None; incr: None (``result`` holds the returned counter value).
    value: bytes | None
    inv: float
    #: Completion time, or None when the outcome is unknown (timeout, error).
    comp: float | None
    result: int | None = None

    @property
    def acked(self) -> bool:
        return self.comp is not None


@dataclass(frozen=True, slots=True)
class Violation:
    kind: Literal["lost_write", "stale_read", "duplicate", "lost_increment", "unknown_value"]
    key: bytes
    detail: str

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "key": self.key.decode("utf-8", "replace"),
            "detail": self.detail,
        }


@dataclass(slots=True)
class CheckResult:
    lost_writes: int = 0
    stale_reads: int = 0
    duplicates: int = 0
    lost_increments: int = 0
    unknown_values: int = 0
    operations: int = 0
    keys: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost_writes
            or self.stale_reads
            or self.duplicates
            or self.lost_increments
            or self.unknown_values
        )

    def add(self, v: Violation, limit: int = 100) -> None:
        match v.kind:
            case "lost_write":
                self.lost_writes += 1
            case "stale_read":
                self.stale_reads += 1
            case "duplicate":
                self.duplicates += 1
            case "lost_increment":
                self.lost_increments += 1
            case "unknown_value":
                self.unknown_values += 1
        if len(self.violations) < limit:
            self.violations.append(v)

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "lost_writes": self.lost_writes,
            "stale_reads": self.stale_reads,
            "duplicates": self.duplicates,
            "lost_increments": self.lost_increments,
            "unknown_values": self.unknown_values,
            "operations": self.operations,
            "keys": self.keys,
            "examples": [v.to_json() for v in self.violations[:20]],
        }


class History:
    """Recorded operations of any number of clients (thread-safe enough for asyncio)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        #: key -> the value it held before the run (None: absent), for preloaded data.
        self.initial: dict[bytes, bytes | None] = {}
        #: key -> counter value before the run.
        self.initial_counters: dict[bytes, int] = {}
        #: key -> value read once the system was quiescent after the run.
        self.final: dict[bytes, bytes | None] = {}
        self.final_counters: dict[bytes, int] = {}

    # -- recording ---------------------------------------------------------------------------

    def invoke(self, kind: Kind, key: bytes, value: bytes | None = None) -> Op:
        op = Op(kind, key, None if value is None else value_token(value), now(), None)
        self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, value: bytes | None = None, result: int | None = None) -> None:
        """Mark ``op`` acknowledged; for reads ``value`` is what it returned."""
        op.comp = now()
        if op.kind == "get":
            op.value = None if value is None else value_token(value)
        if result is not None:
            op.result = result

    # -- checking ----------------------------------------------------------------------------

    def check(self) -> CheckResult:
        result = CheckResult(operations=len(self.ops))
        by_key: dict[bytes, list[Op]] = defaultdict(list)
        counters = set(self.final_counters)
        for op in self.ops:
            by_key[op.key].append(op)
            if op.kind == "incr":
                counters.add(op.key)
        keys = by_key.keys() | self.final.keys() | self.final_counters.keys()
        result.keys = len(keys)
        for key in sorted(keys):
            ops = by_key.get(key)
            if key in counters:
                self._check_counter(key, ops or [], result)
            elif ops is not None or not self._unchanged(key):
                self._check_register(key, ops or [], result)
        return result

    def _unchanged(self, key: bytes) -> bool:
        """True if an untouched register's final value is its initial one (nothing to judge)."""
        if key not in self.final:
            return True
        final, initial = self.final[key], self.initial.get(key)
        if final is None or initial is None:
            return final is initial
        return value_token(final) == value_token(initial)

    def _check_register(self, key: bytes, ops: list[Op], result: CheckResult) -> None:
        writes = [op for op in ops if op.kind in ("set", "del")]
        # token -> the write that produced it; None-producing writes (DEL, initial absence)
        # are kept apart since many can explain a "not found".
        producers: dict[bytes, Op] = {}
        deletes: list[Op] = []
        for w in writes:
            if w.kind == "set":
                assert w.value is not None
                producers[value_token(w.value)] = w
            else:
                deletes.append(w)
        initial = self.initial.get(key)
        initial_token = value_token(initial) if initial is not None else None

        # Acknowledged writes sorted by completion, with the running max of their invocations:
        # latest_inv_before(t) = the latest start of a write that definitely ended before t.
        acked = sorted((w for w in writes if w.acked), key=lambda w: w.comp)  # type: ignore[arg-type, return-value]
        comps = [w.comp for w in acked]
        running_max: list[float] = []
        m = -math.inf
        for w in acked:
            m = max(m, w.inv)
            running_max.append(m)

        def latest_inv_before(t: float) -> float:
            i = bisect.bisect_left(comps, t)
            return running_max[i - 1] if i else -math.inf

        def explains(
            candidate_comp: float, candidate_inv: float, read_inv: float, read_comp: float
        ) -> bool:
            # The candidate must have started before the read ended, and no acknowledged write
            # may lie wholly between the candidate's end and the read's start.
            return candidate_inv < read_comp and latest_inv_before(read_inv) <= candidate_comp

        def check_value(value: bytes | None, r_inv: float, r_comp: float) -> str | None:
            """None if ``value`` is a legal result of a read over [r_inv, r_comp], else why."""
            if value is None:
                candidates = [(-math.inf, -math.inf)] if initial is None else []
                candidates += [(d.comp if d.acked else math.inf, d.inv) for d in deletes]
                if not candidates:
                    return "read 'not found' but the key was never deleted"
                if any(explains(c, i, r_inv, r_comp) for c, i in candidates):
                    return None
                return "read 'not found' although a later write was acknowledged before"
            token = value_token(value)
            w = producers.get(token)
            if w is None:
                if token == initial_token:
                    if explains(-math.inf, -math.inf, r_inv, r_comp):
                        return None
                    return f"read the initial value {token!r} after an acknowledged write"
                return f"read {token!r} which no write produced"
            if explains(w.comp if w.acked else math.inf, w.inv, r_inv, r_comp):
                return None
            return f"read {token!r} although a later write was acknowledged before the read began"

        for r in ops:
            if r.kind != "get" or not r.acked:
                continue
            why = check_value(r.value, r.inv, r.comp)  # type: ignore[arg-type]
            if why is not None:
                kind = "unknown_value" if "no write produced" in why else "stale_read"
                result.add(Violation(kind, key, why))

        if key in self.final:
            why = check_value(self.final[key], math.inf, math.inf)
            if why is not None:
                if "no write produced" in why:
                    result.add(Violation("unknown_value", key, "final " + why))
                    return
                # Every acknowledged write that definitely came after the surviving one is lost.
                survivor = self.final[key]
                if survivor is None:
                    cut = max([-math.inf] + [d.comp if d.acked else math.inf for d in deletes])
                else:
                    w = producers.get(value_token(survivor))
                    cut = -math.inf if w is None else (w.comp if w.acked else math.inf)
                lost = [w for w in acked if w.inv > cut]
                for w in lost or [None]:
                    detail = (
                        (f"final value {survivor!r} hides the acknowledged {w.kind} {w.value!r}")
                        if w
                        else why
                    )
                    result.add(Violation("lost_write", key, detail))

    def _check_counter(self, key: bytes, ops: list[Op], result: CheckResult) -> None:
        incrs = [op for op in ops if op.kind == "incr"]
        base = self.initial_counters.get(key, 0)
        acked = [op for op in incrs if op.acked]
        unknown = len(incrs) - len(acked)
        seen: dict[int, Op] = {}
        for op in acked:
            if op.result is None:
                continue
            if op.result in seen:
                result.add(Violation("duplicate", key, f"two increments both returned {op.result}"))
            seen[op.result] = op
        final = self.final_counters.get(key)
        if final is None:
            return
        low, high = base + len(acked), base + len(acked) + unknown
        if final > high:
            result.add(
                Violation(
                    "duplicate", key, f"final {final} > {high}: an increment was applied twice"
                )
            )
        elif final < low:
            result.add(
                Violation("lost_increment", key, f"final {final} < {low} acknowledged increments")
            )

    # -- persistence -------------------------------------------------------------------------

    def dump(self, path: Path) -> None:
        """Write the history as JSON lines (one op per line, values as their tokens) for
        offline inspection."""
        with path.open("w") as f:
            for op in self.ops:
                d = asdict(op)
                d["key"] = op.key.decode("latin-1")
                d["value"] = None if op.value is None else op.value.decode("latin-1")
                f.write(json.dumps(d) + "\n")

    def extend(self, ops: Iterable[Op]) -> None:
        self.ops.extend(ops)
