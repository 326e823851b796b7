"""The command table's classification plans (one per command name and argument count) give
exactly what classifying from the key specs gives, and CROSSSLOT still. Shipped table only: no
Redis needed."""

from __future__ import annotations

import pytest

from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd.table import CommandError, CommandTable, Kind

#: Every way a key is found (index, range to the end, a step, a key count, a keyword, a
#: subcommand), every kind, and requests Redis refuses (arity, unknown).
REQUESTS: list[list[str]] = [
    ["GET", "{a}1"],
    ["SET", "{a}1", "v", "EX", "10", "GET"],
    ["MSET", "{a}1", "x", "{a}2", "y"],
    ["MGET", "{a}1", "{a}2"],
    ["DEL", "{a}1", "{a}2", "{a}3"],
    ["INCRBY", "{a}1", "5"],
    ["RENAME", "{a}1", "{a}2"],
    ["HSET", "{a}h", "f", "v", "g", "w"],
    ["LPUSH", "{a}l", "1", "2"],
    ["ZADD", "{a}z", "1", "m"],
    ["BLPOP", "{a}l", "0"],
    ["ZUNIONSTORE", "{a}d", "2", "{a}x", "{a}y"],
    ["XREAD", "COUNT", "1", "STREAMS", "{a}s", "0"],
    ["OBJECT", "ENCODING", "{a}1"],
    ["EVAL", "return 1", "1", "{a}1"],
    ["SORT", "{a}l", "BY", "w*"],
    ["GET"],
    ["NOSUCH", "{a}1"],
    ["PING"],
]


def _args(words: list[str]) -> list[bytes]:
    return [w.encode() for w in words]


@pytest.mark.parametrize("words", REQUESTS, ids=lambda w: " ".join(w[:2]))
def test_a_planned_classification_equals_the_key_spec_one(words: list[str]) -> None:
    table = CommandTable.shipped()
    args = _args(words)
    try:
        first = table.classify(args)
    except CommandError as e:
        with pytest.raises(CommandError, match=e.message):
            table.classify(args)
        return
    # Other keys, same name and argument count: the plan (if one was made) answers now.
    again = table.classify([a.replace(b"{a}", b"{zz}") for a in args])
    fresh = CommandTable.shipped()._classify([a.replace(b"{a}", b"{zz}") for a in args])
    assert again == fresh
    assert table.classify(args) == first


def test_plans_are_made_for_fixed_key_positions_only() -> None:
    table = CommandTable.shipped()
    table.classify(_args(["SET", "k", "v"]))
    table.classify(_args(["ZUNIONSTORE", "{a}d", "2", "{a}x", "{a}y"]))  # a key count
    table.classify(_args(["OBJECT", "ENCODING", "k"]))  # a subcommand
    assert list(table._plans) == [(b"SET", 3)]


def test_a_plan_keeps_crossslot_and_the_slot() -> None:
    table = CommandTable.shipped()
    c = table.classify(_args(["MGET", "{a}1", "{a}2"]))
    assert c.slot == key_slot(b"a") and c.kind is Kind.READ
    assert (b"MGET", 3) in table._plans
    with pytest.raises(CommandError, match="CROSSSLOT"):
        table.classify(_args(["MGET", "x", "y"]))
    c = table.classify(_args(["MGET", "{b}1", "{b}2"]))
    assert c.keys == (b"{b}1", b"{b}2") and c.slot == key_slot(b"b")


def test_a_command_without_keys_is_not_planned() -> None:
    table = CommandTable.shipped()
    assert table.classify(_args(["ECHO", "x"])).kind is Kind.KEYLESS
    assert not table._plans
