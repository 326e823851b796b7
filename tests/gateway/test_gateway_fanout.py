"""Merging every server's part of a keyspace-wide command (unit tests, no server)."""

from __future__ import annotations

import pytest

from netmigrate.gateway.fanout import is_wide, merge, scan_reply, scan_target, writes
from netmigrate.rediscmd.resp import encode


def test_keys_are_the_union_and_dbsize_the_sum() -> None:
    a = encode([b"k1", b"moving"])
    b = encode([b"moving", b"k2"])
    # A key of a migrating slot exists at its source and its target: listed once.
    assert merge([b"KEYS", b"*"], [a, b]) == encode([b"k1", b"moving", b"k2"])
    assert merge([b"DBSIZE"], [b":2\r\n", b":3\r\n"]) == b":5\r\n"
    assert merge([b"RANDOMKEY"], [b"$-1\r\n", b"$2\r\nk2\r\n"]) == b"$2\r\nk2\r\n"
    assert merge([b"RANDOMKEY"], [b"$-1\r\n", b"$-1\r\n"]) == b"$-1\r\n"


def test_a_write_is_ok_only_when_every_server_said_ok() -> None:
    args = [b"CONFIG", b"SET", b"hash-max-listpack-entries", b"5"]
    assert writes(args) and writes([b"FLUSHALL"]) and not writes([b"CONFIG", b"GET", b"x"])
    assert merge(args, [b"+OK\r\n", b"+OK\r\n"]) == b"+OK\r\n"
    refused = b"-ERR FLUSHALL is not served while slots of the keyspace migrate\r\n"
    assert merge([b"FLUSHALL"], [b"+OK\r\n", refused]) == refused


def test_one_scan_cursor_walks_every_server_in_turn() -> None:
    servers = 3
    assert scan_target(b"0", servers) == (0, 0)
    # Server 0 goes on at its cursor 17; then, when done, server 1 starts.
    first = scan_reply(encode([b"17", [b"a"]]), 0, servers)
    assert first == encode([b"51", [b"a"]]) and scan_target(b"51", servers) == (0, 17)
    assert scan_reply(encode([b"0", [b"b"]]), 0, servers) == encode([b"1", [b"b"]])
    assert scan_target(b"1", servers) == (1, 0)
    # The last server's end is the end of the whole scan.
    assert scan_reply(encode([b"0", []]), 2, servers) == encode([b"0", []])
    with pytest.raises(ValueError):
        scan_target(b"-1", servers)
    with pytest.raises(ValueError):
        scan_target(b"x", servers)


def test_what_is_served_over_every_server() -> None:
    for args in ([b"KEYS", b"*"], [b"scan", b"0"], [b"FUNCTION", b"FLUSH"], [b"CONFIG", b"GET"]):
        assert is_wide(args), args
    for args in ([b"GET", b"k"], [b"FUNCTION", b"LOAD", b"x"], [b"CONFIG", b"REWRITE"]):
        assert not is_wide(args), args
