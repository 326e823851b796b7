"""What the data path answers when the answer is not a fresh Redis reply: a write Redis had
recorded before (its reply datagram, rebuilt from the record), or a failure instead of a reply
(which status, and whether the request may count as applied)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netmigrate.agent.commands import OPS, TRANSIENT_ERRORS
from netmigrate.agent.dedup import RecordError, decode_record
from netmigrate.agent.resp import ConnectionLost, ReplyError
from netmigrate.protocol.codec import ErrorReply, HeaderFields, encode_body, pack_reply_header
from netmigrate.protocol.constants import F_OP, Status

log = logging.getLogger(__name__)


def reply_of_record(record: bytes) -> bytes:
    """The reply datagram a request id record stands for (RecordError if it is unreadable)."""
    decoded = decode_record(record)
    return decoded if isinstance(decoded, bytes) else recorded_reply(*decoded)


def recorded_reply(fields: HeaderFields, answer: Any) -> bytes:
    """The reply datagram a recorded write was answered with (the same bytes)."""
    spec = OPS.get(fields[F_OP])
    if spec is None or spec.read_only:
        raise RecordError(f"record of op 0x{fields[F_OP]:02x}, which is not a write")
    status, body = spec.reply(answer)
    return pack_reply_header(fields, status) + encode_body(body)


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
