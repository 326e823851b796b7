"""The slot function equals Redis Cluster's CLUSTER KEYSLOT, checked against a real Redis."""

from __future__ import annotations

import random

import pytest

from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import crc16_xmodem, hash_tag, key_slot


def test_crc16_check_value() -> None:
    # The CRC-16/XMODEM check value (CRC of b"123456789"), as in the Redis Cluster spec.
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"") == 0


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        (b"user:1000", b"user:1000"),
        (b"{user1000}.following", b"user1000"),
        (b"foo{}{bar}", b"foo{}{bar}"),  # the first {} is empty: hash the whole key
        (b"foo{{bar}}zap", b"{bar"),
        (b"foo{bar}{zap}", b"bar"),
        (b"{", b"{"),
        (b"}{", b"}{"),
        (b"a{b", b"a{b"),
        (b"", b""),
    ],
)
def test_hash_tag_rules(key: bytes, tag: bytes) -> None:
    assert hash_tag(key) == tag
    assert key_slot(key) == crc16_xmodem(tag) % SLOT_COUNT


def test_str_keys_hash_as_utf8() -> None:
    assert key_slot("ключ{тег}") == key_slot("ключ{тег}".encode())


def _random_keys(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    alphabet = b"ab{}:x"  # braces often, so that tag edge cases come up by themselves
    keys: list[bytes] = [b"", b"{}", b"{{}}", b"}{", b"{a}{b}", b"\x00{\xff}"]
    while len(keys) < n:
        kind = rng.randrange(4)
        if kind == 0:  # arbitrary binary
            keys.append(rng.randbytes(rng.randrange(0, 48)))
        elif kind == 1:  # short keys over a brace-heavy alphabet
            keys.append(bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))))
        elif kind == 2:  # explicit hashtag with binary content around and inside
            keys.append(
                rng.randbytes(rng.randrange(0, 8))
                + b"{"
                + rng.randbytes(rng.randrange(0, 8)).replace(b"}", b"")
                + b"}"
                + rng.randbytes(rng.randrange(0, 8))
            )
        else:  # typical application keys, some non-ASCII
            keys.append(f"user:{rng.randrange(10**9)}:ключ{rng.randrange(100)}".encode())
    return keys


def test_key_slot_matches_cluster_keyslot_of_real_redis(cluster_redis) -> None:
    keys = _random_keys(12_000, seed=20240611)
    client = cluster_redis.client()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
    expected = pipe.execute()
    mismatches = [
        (k, e, key_slot(k)) for k, e in zip(keys, expected, strict=True) if key_slot(k) != e
    ]
    assert not mismatches, mismatches[:5]
    # The sample must actually exercise the hashtag rule, both ways.
    assert sum(hash_tag(k) != k for k in keys) > 1000
    assert sum(b"{" in k and hash_tag(k) == k for k in keys) > 100
