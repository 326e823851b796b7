"""Exceptions of the NetMigrate client.

Every exception says whether the call may have taken effect: ``outcome_unknown`` is True when
a write may have been applied although the call failed (no reply came, the retry budget ran
out, the client was closed with the request on the wire), False when the call surely changed
nothing (refused before sending, or an answer that says nothing was applied). A caller that
must know retries the same operation idempotently or reads the key back; a history checker
treats such a call as one that may take effect at any time after it began.
"""

from __future__ import annotations

from netmigrate.protocol.constants import RETRYABLE_STATUSES, Status


class NetMigrateError(Exception):
    """Base of every error the client raises."""

    #: True when the failed call may nevertheless have taken effect.
    outcome_unknown: bool = False


class OutcomeUnknown(NetMigrateError):
    """The call failed, but what it asked for may have been applied (or may still be, by a
    copy of the request still on its way)."""

    outcome_unknown = True


class Timeout(OutcomeUnknown, TimeoutError):
    """No usable reply within the call's deadline (every attempt went unanswered)."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class TooLarge(NetMigrateError):
    """The request would not fit one datagram; raised before anything is sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request of {size} bytes exceeds the max datagram of {limit} bytes")
        self.size = size
        self.limit = limit


class RedisReplyError(NetMigrateError):
    """Redis answered the command with an error reply (``WRONGTYPE ...``, ``CROSSSLOT ...``):
    the command ran (or was refused as Redis itself would), retrying it changes nothing.
    ``message`` is Redis' text, ``code`` its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]


class CommandRefused(NetMigrateError):
    """A command NetMigrate cannot send as one request of one slot (keyspace-wide, blocking,
    pub/sub, administrative ...); the message says which limit. Nothing was sent."""


class ServerError(NetMigrateError):
    """The server answered with an error status (after retries, for the retryable ones)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}" if message else status.name)
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


class RetryBudgetSpent(ServerError, OutcomeUnknown):
    """The deadline passed while the servers kept answering a retryable status (WRONG_OWNER,
    BUSY, MISS, or an error from a double read's target). An earlier attempt whose reply was
    lost, or a copy still in flight, may have been applied: the outcome is unknown."""

    def __init__(self, status: Status, message: str, attempts: int) -> None:
        super().__init__(status, message)
        self.attempts = attempts


class ClientClosed(OutcomeUnknown):
    """The client was closed while the request was outstanding."""
