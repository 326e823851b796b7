"""Keyspace-wide commands over every server of the keyspace: each server's agent answers its
part (``agent.keyspace_wide``), the gateway merges them as Redis Cluster's response-policy
tips say (KEYS: the union; DBSIZE: the sum; FLUSHALL, CONFIG SET: OK when every server said
OK), and SCAN walks the servers one after another with one cursor.

What they mean while slots migrate (docs/compatibility.md): a key of a migrating slot may
exist at its source and its target at once, so KEYS lists it once (the union) but DBSIZE may
count it twice and SCAN may return it from both; a flush is refused while any slot migrates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from netmigrate.rediscmd.resp import Error, ProtocolError, ReplyParser, encode

#: Commands whose parts are each server's answer to the same command, and how they merge.
UNION, SUM, ALL_OK, FIRST, ANY = "union", "sum", "all_ok", "first", "any"
_MERGE = {
    b"keys": UNION,
    b"dbsize": SUM,
    b"randomkey": ANY,
    b"flushall": ALL_OK,
    b"flushdb": ALL_OK,
    b"function": ALL_OK,
    b"config": FIRST,  # CONFIG GET; CONFIG SET is ALL_OK (below)
}
WRITES = frozenset({b"flushall", b"flushdb", b"function"})


def is_wide(args: Sequence[bytes]) -> bool:
    """Whether the gateway serves ``args`` over every server (the agents decide the rest)."""
    name = args[0].lower()
    if name == b"function":
        return len(args) >= 2 and args[1].lower() == b"flush"
    if name == b"config":
        return len(args) >= 2 and args[1].lower() in (b"get", b"set")
    return name in _MERGE or name == b"scan"


def writes(args: Sequence[bytes]) -> bool:
    name = args[0].lower()
    return name in WRITES or (name == b"config" and args[1].lower() == b"set")


def merge(args: Sequence[bytes], parts: Sequence[bytes], resp: int = 2) -> bytes:
    """One reply, in RESP version ``resp``, from every server's (RESP2) reply to the same
    command."""
    name = args[0].lower()
    policy = ALL_OK if name == b"config" and args[1].lower() == b"set" else _MERGE[name]
    values: list[Any] = []
    for part in parts:
        try:
            value = ReplyParser.parse(part)
        except (ProtocolError, ValueError) as e:
            return encode(Error(f"ERR NetMigrate: unreadable reply of a server ({e})"))
        if isinstance(value, Error):
            return part  # any server's error is the answer (Redis Cluster: all_succeeded)
        values.append(value)
    if policy == UNION:
        seen: dict[bytes, None] = {}
        for v in values:
            seen.update(dict.fromkeys(v))
        return encode(list(seen), resp)
    if policy == SUM:
        return encode(sum(values), resp)
    if policy == ANY:
        found = [v for v in values if v is not None]
        return encode(random.choice(found) if found else None, resp)
    if policy == ALL_OK:
        return b"+OK\r\n"
    # CONFIG GET: a map in RESP3.
    first = values[0]
    return encode(dict(zip(first[0::2], first[1::2], strict=True)) if resp == 3 else first, resp)


def scan_target(cursor: bytes, servers: int) -> tuple[int, int]:
    """(server index, that server's cursor) of a gateway SCAN cursor; ValueError if invalid.

    The gateway's cursor is ``server cursor * servers + index``: it walks server 0 to the end,
    then server 1 ..., and is 0 again only after the last one (0 starts at server 0)."""
    value = int(cursor)
    if value < 0:
        raise ValueError(cursor)
    return value % servers, value // servers


def scan_reply(part: bytes, index: int, servers: int, resp: int = 2) -> bytes:
    """The gateway's SCAN reply from server ``index``'s: its keys, and the cursor that goes on
    at that server, or at the next one when it is done."""
    try:
        value = ReplyParser.parse(part)
    except (ProtocolError, ValueError) as e:
        return encode(Error(f"ERR NetMigrate: unreadable reply of a server ({e})"))
    if isinstance(value, Error):
        return part
    cursor, keys = int(value[0]), value[1]
    following = cursor * servers + index
    if not cursor:  # that server is done: the next one's start, or the end
        following = index + 1 if index + 1 < servers else 0
    return encode([b"%d" % following, keys], resp)
