"""What the load generator does: which key, which operation, which value."""

from __future__ import annotations

import random
from dataclasses import dataclass

from netmigrate.bench.ycsb import ScrambledZipfianGenerator

OPS = ("get", "set", "del", "incrby", "mget")
DEFAULT_MIX = "get=50,set=30,del=5,incrby=10,mget=5"


def parse_mix(text: str) -> dict[str, float]:
    """``get=50,set=30,...`` -> normalised weights; unknown ops or no weight is an error."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, w = part.strip().partition("=")
        if not sep or name not in OPS:
            raise ValueError(f"invalid mix item {part!r}: want OP=WEIGHT with OP in {OPS}")
        try:
            weights[name] = float(w)
        except ValueError:
            raise ValueError(f"invalid weight in {part!r}") from None
        if weights[name] < 0:
            raise ValueError(f"negative weight in {part!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("the mix has no positive weight")
    return {k: v / total for k, v in weights.items()}


def data_key(prefix: bytes, i: int) -> bytes:
    return b"%skey:%d" % (prefix, i)


def counter_key(prefix: bytes, i: int) -> bytes:
    return b"%sctr:%d" % (prefix, i)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    keys: int = 10_000
    counters: int = 1_000
    value_size: int = 64
    mix: str = DEFAULT_MIX
    #: Fraction of SETs that carry a TTL.
    ttl_fraction: float = 0.1
    #: Long enough that nothing expires during a run, so the checker's model stays exact.
    ttl_ms: int = 3_600_000
    mget_keys: int = 4
    seed: int = 1
    #: Every key starts with it. The checker assumes a key holds only what this run preloaded
    #: (or nothing), so each run should get its own prefix (the CLI draws a random one).
    key_prefix: str = "nm:"


class Chooser:
    """Draws (op, keys) for one worker; seeded, so a run is repeatable."""

    def __init__(self, cfg: WorkloadConfig, worker: int) -> None:
        self.cfg = cfg
        self.prefix = cfg.key_prefix.encode()
        self.rng = random.Random(cfg.seed * 100_003 + worker)
        mix = parse_mix(cfg.mix)
        self.ops = list(mix)
        self.weights = [mix[o] for o in self.ops]
        self.zipf = ScrambledZipfianGenerator(0, cfg.keys - 1, self.rng)
        self.czipf = ScrambledZipfianGenerator(0, max(cfg.counters, 1) - 1, self.rng)

    def op(self) -> str:
        return self.rng.choices(self.ops, self.weights)[0]

    def key(self) -> bytes:
        return data_key(self.prefix, self.zipf.next())

    def counter(self) -> bytes:
        return counter_key(self.prefix, self.czipf.next())

    def ttl(self) -> int:
        return self.cfg.ttl_ms if self.rng.random() < self.cfg.ttl_fraction else 0
