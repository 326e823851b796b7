"""Per data op: which keys it names, its one Redis command, and how Redis' answer maps back.

Every op is exactly one Redis command, so it is applied entirely or not at all (MSET is one
atomic MSET). Commands are spelled as raw RESP because the data path builds one per request.
The data path runs a write's command inside the script that also records its request id
(``dedup.WRITE_SCRIPT``); the answers below are what the script returns, too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netmigrate.agent.reserved import RESERVED_MESSAGE, RESERVED_PREFIXES
from netmigrate.protocol.codec import (
    Body,
    CountReply,
    Delete,
    Empty,
    Get,
    IncrBy,
    IntReply,
    MGet,
    MGetReply,
    MSet,
    RespReply,
    Set,
    SetReply,
    ValueReply,
)
from netmigrate.protocol.constants import READ_OPS, Op, SetCondition, Status
from netmigrate.protocol.slot import key_slot

_OK = int(Status.OK)
_NOT_FOUND = int(Status.NOT_FOUND)


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def _get(b: Get) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(b.key), b.key)


def _del(b: Delete) -> bytes:
    return b"*2\r\n$3\r\nDEL\r\n$%d\r\n%b\r\n" % (len(b.key), b.key)


def _set(b: Set) -> bytes:
    extra = b""
    n = 3
    if b.ttl_ms:
        extra = b"$2\r\nPX\r\n" + _bulk(b"%d" % b.ttl_ms)
        n += 2
    if b.condition == SetCondition.NX:
        extra += b"$2\r\nNX\r\n"
        n += 1
    elif b.condition == SetCondition.XX:
        extra += b"$2\r\nXX\r\n"
        n += 1
    return b"*%d\r\n$3\r\nSET\r\n%b%b%b" % (n, _bulk(b.key), _bulk(b.value), extra)


def _incrby(b: IncrBy) -> bytes:
    return b"*3\r\n$6\r\nINCRBY\r\n%b%b" % (_bulk(b.key), _bulk(b"%d" % b.delta))


def _mget(b: MGet) -> bytes:
    return b"*%d\r\n$4\r\nMGET\r\n%b" % (len(b.keys) + 1, b"".join(map(_bulk, b.keys)))


def _mset(b: MSet) -> bytes:
    args = b"".join(_bulk(k) + _bulk(v) for k, v in b.items)
    return b"*%d\r\n$4\r\nMSET\r\n%b" % (2 * len(b.items) + 1, args)


def _value_reply(r: Any) -> tuple[int, Body]:
    return (_NOT_FOUND, ValueReply(None)) if r is None else (_OK, ValueReply(r))


@dataclass(frozen=True, slots=True)
class OpSpec:
    #: True for MGET / MSET: several keys that must share one slot.
    multi_key: bool
    #: True for GET / MGET: running it again changes nothing.
    read_only: bool
    #: The keys the request names.
    keys: Callable[[Any], tuple[bytes, ...]]
    #: The RESP command that applies it.
    command: Callable[[Any], bytes]
    #: Redis' (non-error) answer -> (status, reply body).
    reply: Callable[[Any], tuple[int, Body]]
    #: The recording script answers with the key read back (a decimal string) instead of the
    #: command's integer: Lua numbers are doubles and would round INCRBY's results above 2^53.
    readback: bool = False
    #: CMD_READ / CMD_WRITE: Redis commands checked against the command table and run in the
    #: generic scripts (``agent.generic``); ``keys`` and ``command`` do not apply to them.
    generic: bool = False


def _one_key(b: Any) -> tuple[bytes, ...]:
    return (b.key,)


def _no_command(b: Any) -> bytes:
    raise TypeError("a generic request's command is built by agent.generic")


OPS: dict[int, OpSpec] = {
    Op.GET: OpSpec(False, True, _one_key, _get, _value_reply),
    Op.SET: OpSpec(False, False, _one_key, _set, lambda r: (_OK, SetReply(r is not None))),
    Op.DEL: OpSpec(False, False, _one_key, _del, lambda r: (_OK, CountReply(r))),
    Op.INCRBY: OpSpec(
        False, False, _one_key, _incrby, lambda r: (_OK, IntReply(int(r))), readback=True
    ),
    Op.MGET: OpSpec(True, True, lambda b: b.keys, _mget, lambda r: (_OK, MGetReply(tuple(r)))),
    Op.MSET: OpSpec(
        True, False, lambda b: tuple(k for k, _ in b.items), _mset, lambda r: (_OK, Empty())
    ),
    Op.CMD_READ: OpSpec(
        True, True, lambda b: (), _no_command, lambda r: (_OK, RespReply(r)), generic=True
    ),
    Op.CMD_WRITE: OpSpec(
        True, False, lambda b: (), _no_command, lambda r: (_OK, RespReply(r)), generic=True
    ),
}
assert {op for op, spec in OPS.items() if spec.read_only} == READ_OPS

#: Redis error prefixes after which the command was certainly not applied and a later retry
#: can succeed (cluster not ready yet, dataset loading, script running, the recording script
#: flushed from Redis' cache and being loaded again ...): answered BUSY.
TRANSIENT_ERRORS = ("CLUSTERDOWN", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "NOSCRIPT")


def check_multi_keys(keys: tuple[bytes, ...], slot: int) -> tuple[int, str] | None:
    """(status, message) when the keys of a multi-key request do not fit its header slot."""
    first = key_slot(keys[0])
    for key in keys:
        if key.startswith(RESERVED_PREFIXES):
            return int(Status.BAD_REQUEST), RESERVED_MESSAGE
        if key_slot(key) != first:
            return int(Status.CROSSSLOT), "the keys of one request must share a slot"
    if first != slot:
        return int(Status.BAD_REQUEST), f"slot {slot} in the header, but the keys hash to {first}"
    return None
