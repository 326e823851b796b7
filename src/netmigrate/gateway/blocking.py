"""Blocking list and sorted-set commands outside MULTI, served by polling their keyspace.

A NetMigrate request is one datagram and one answer (DESIGN section 4), so a command cannot
wait at an agent for a push. The gateway waits instead: it runs the command's non-blocking
form (what Redis runs inside MULTI: BLPOP as LPOP over its keys, BLMOVE as LMOVE ...) as a
one-command transaction, a write of the keys' slot (at a migration target the keys are pulled
first, as for any write); while that answers nothing it watches the keys with a cheap read
(``EXISTS``, double-read during a migration) after a short, growing pause, and runs the
non-blocking form again once one of them exists, until the command's timeout (0: until the
client disconnects). The answer is Redis' own: the popped elements, Redis' error, or the
timeout's null array.

What differs from Redis: blocked clients are not served first come, first served (each polls
on its own), and a push is seen up to one poll interval (:data:`MAX_PAUSE`) late.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from netmigrate.rediscmd.resp import Error, encode
from netmigrate.rediscmd.table import Classified, in_transaction

#: Pauses between polls of a blocked command: the first, then doubling up to the last.
FIRST_PAUSE = 0.005
MAX_PAUSE = 0.1

#: Blocking commands served here, and where their timeout argument is (an index into the
#: arguments; negative from the end).
TIMEOUT_AT = {
    b"blpop": -1,
    b"brpop": -1,
    b"brpoplpush": -1,
    b"blmove": -1,
    b"bzpopmin": -1,
    b"bzpopmax": -1,
    b"blmpop": 1,
    b"bzmpop": 1,
}
#: Commands whose first key is the only one they pop from (the second is the destination).
_SOURCE_ONLY = frozenset({b"brpoplpush", b"blmove"})

Transaction = Callable[[int, Sequence[tuple[Classified, Sequence[bytes]]], int], Awaitable[bytes]]
Batch = Callable[[Sequence[tuple[Classified, Sequence[bytes]]], int], Awaitable[list[bytes]]]


class TimeoutArgError(ValueError):
    """The timeout argument is not one Redis accepts; ``message`` is Redis' error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def timeout_of(args: Sequence[bytes]) -> float:
    """The command's timeout in seconds (0: none), checked as Redis checks it."""
    raw = args[TIMEOUT_AT[args[0].lower()]]
    try:
        value = float(raw)
    except ValueError:
        raise TimeoutArgError("ERR timeout is not a float or out of range") from None
    if math.isnan(value) or math.isinf(value):
        raise TimeoutArgError("ERR timeout is not a float or out of range")
    if value < 0:
        raise TimeoutArgError("ERR timeout is negative")
    return value


def _empty(reply: bytes) -> bool:
    """The non-blocking form found nothing to pop (its null reply, RESP2 or RESP3)."""
    return reply in (b"$-1\r\n", b"*-1\r\n", b"_\r\n")


async def serve(
    request: Classified,
    args: list[bytes],
    resp: int,
    transaction: Transaction,
    batch: Batch,
    exists: Classified,
) -> bytes:
    """The reply of a blocking command ``args`` (classified as ``request``; ``exists`` is the
    classified ``EXISTS`` of the keys it pops from)."""
    deadline_s = timeout_of(args)
    deadline = time.monotonic() + deadline_s if deadline_s > 0 else math.inf
    nonblocking = in_transaction(request)
    assert request.slot is not None
    probe = [b"EXISTS", *exists.keys]
    pause = FIRST_PAUSE
    while True:
        reply = await transaction(request.slot, [(nonblocking, args)], resp)
        if not reply.startswith(b"*1\r\n"):
            return reply  # not EXEC's array of one: NetMigrate's own error
        reply = reply[4:]
        if not _empty(reply):
            return reply
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return encode(None, resp) if resp == 3 else b"*-1\r\n"
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE)
            found = (await batch([(exists, probe)], resp))[0]
            if found.startswith(b"-"):
                return found
            if found != b":0\r\n":
                break


def source_keys(name: bytes, request: Classified) -> tuple[bytes, ...]:
    """The keys a blocking command pops from (not BLMOVE's destination)."""
    if name in _SOURCE_ONLY:
        return request.keys[:1]
    return request.keys


def error(message: str, resp: int) -> bytes:
    return encode(Error(message), resp)
