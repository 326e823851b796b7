"""What the data path answers when Redis answered with a failure instead of a reply: which
status, and whether the request may count as applied. (A recorded write's answer is rebuilt
by :mod:`netmigrate.agent.recorded`.)"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from netmigrate.agent.commands import TRANSIENT_ERRORS
from netmigrate.agent.resp import ConnectionLost, ReplyError
from netmigrate.protocol.codec import ErrorReply, encode_body
from netmigrate.protocol.constants import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailureAnswer:
    status: int
    body: bytes
    #: False: nothing was applied, a retry must run again (the dedup entry is forgotten).
    applied: bool
    #: Redis lost the recording script (SCRIPT FLUSH): load it again.
    script_lost: bool = False


def failure_answer(reply: Exception) -> FailureAnswer:
    """The answer to a request that got an error instead of a reply from Redis."""
    if isinstance(reply, ReplyError):
        message = str(reply)
        if message.startswith(TRANSIENT_ERRORS):
            body = encode_body(ErrorReply(f"Redis: {message}"))
            return FailureAnswer(int(Status.BUSY), body, False, message.startswith("NOSCRIPT"))
        return FailureAnswer(int(Status.ERROR), encode_body(ErrorReply(message)), True)
    if isinstance(reply, ConnectionLost):
        # Retryable, for writes too: a write runs in the recording script, which applies it
        # and records its request id in one step, and a rerun finds the record instead of
        # applying it again, in whichever order the two reach Redis (D16). So the entry is
        # forgotten and the client's retry goes to Redis, which knows.
        return FailureAnswer(int(Status.BUSY), encode_body(ErrorReply(f"Redis: {reply}")), False)
    log.error("unexpected reply object from Redis: %r", reply)
    return FailureAnswer(int(Status.ERROR), encode_body(ErrorReply("internal error")), True)
