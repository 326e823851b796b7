"""10,000 malformed datagrams: every one counted, the right ones answered, nothing applied."""

from __future__ import annotations

import random

from netmigrate.protocol.codec import (
    Delete,
    Get,
    Header,
    IncrBy,
    MGet,
    MSet,
    ProtocolError,
    Set,
    decode,
    encode,
)
from netmigrate.protocol.constants import REPLY_BIT, Op, SetCondition, Status
from netmigrate.protocol.slot import key_slot

N_MALFORMED = 10_000
KNOWN_OPS = {int(op) for op in Op}
SEED = 0x5EED


def _valid_datagrams(rng: random.Random) -> list[bytes]:
    """Valid writes and reads of keys we watch: mutations of these are the fuzz corpus."""
    out = []
    for i in range(40):
        key = b"fz:%d" % (i % 8)
        bodies = [
            (Op.SET, Set(key, b"new-%d" % i, rng.randrange(2) * 5000, SetCondition(i % 3))),
            (Op.INCRBY, IncrBy(b"fz:ctr", 1)),
            (Op.DEL, Delete(key)),
            (Op.MSET, MSet(((b"{fz}a", b"x%d" % i), (b"{fz}b", b"y")))),
            (Op.GET, Get(key)),
            (Op.MGET, MGet((b"{fz}a", b"{fz}b"))),
        ]
        for op, body in bodies:
            slot = key_slot(getattr(body, "key", b"{fz}a"))
            rid = (7 << 32) | (i * 8 + op)
            out.append(encode(Header(op=op, request_id=rid, keyspace=50000, slot=slot), body))
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if len(raw) < 2:
            raw += rng.randbytes(2)
        choice = rng.random()
        if choice < 0.35:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif choice < 0.55:
            del raw[rng.randrange(1, len(raw)) :]
        elif choice < 0.75:
            raw += rng.randbytes(rng.randint(1, 6))
        elif choice < 0.9:
            pos = rng.randrange(len(raw))
            raw[pos:pos] = rng.randbytes(rng.randint(1, 3))
        else:
            raw[rng.randrange(min(len(raw), 18))] ^= 1 << rng.randrange(8)
    return bytes(raw)


def _corpus() -> list[tuple[bytes, Header | None]]:
    """Malformed datagrams, each with the header the agent should answer (None: silence)."""
    rng = random.Random(SEED)
    valid = _valid_datagrams(rng)
    out: list[tuple[bytes, Header | None]] = []
    while len(out) < N_MALFORMED:
        data = rng.randbytes(rng.randrange(0, 40)) if rng.random() < 0.15 else None
        data = data if data is not None else _mutate(rng, rng.choice(valid))
        try:
            decode(data)
        except ProtocolError as e:
            h = e.header
            # Answerable: a readable header naming a known request op (see reply_to_malformed).
            known_request = h is not None and not h.op & REPLY_BIT and h.op in KNOWN_OPS
            out.append((data, h if known_request else None))
    return out


async def test_ten_thousand_malformed_datagrams(raw_agent, cluster_redis) -> None:
    agent, rpc = await raw_agent()
    redis = cluster_redis.client()
    for key, value in {
        b"fz:0": b"orig0",
        b"fz:1": b"o1",
        b"fz:ctr": b"100",
        b"{fz}a": b"A",
    }.items():
        redis.set(key, value, px=600_000 if key == b"fz:1" else None)
    before = {k: redis.dump(k) for k in redis.scan_iter()}
    corpus = _corpus()
    expected = [h for _, h in corpus if h is not None]
    assert 1000 < len(expected) < N_MALFORMED  # both kinds are well represented

    got = []
    for i in range(0, N_MALFORMED, 250):  # in chunks, reading answers as they come
        for data, _ in corpus[i : i + 250]:
            rpc.peer.send(data, rpc.address)
        want = sum(h is not None for _, h in corpus[: i + 250])
        while len(got) < want:
            got.append(await rpc.reply(timeout=5))
    await rpc.peer.expect_silence(0.2)

    assert all(m.header.status == Status.BAD_REQUEST for m in got)
    assert all(m.header.op == h.op | REPLY_BIT for m, h in zip(got, expected, strict=True))
    assert sorted(m.header.request_id for m in got) == sorted(h.request_id for h in expected)
    counters = agent.stats.snapshot().counters
    assert counters["bad_datagrams"] == N_MALFORMED
    assert counters["bad_answered"] == len(expected)
    assert counters["redis_commands"] == 0
    # Nothing was applied, not even partly.
    assert {k: redis.dump(k) for k in redis.scan_iter()} == before

    # And the agent still serves correctly.
    r = await rpc(Op.INCRBY, IncrBy(b"fz:ctr", 1))
    assert r.body.value == 101
    r = await rpc(Op.MGET, MGet((b"{fz}a", b"{fz}b")))
    assert r.body.values == (b"A", None)
