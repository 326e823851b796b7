"""Exceptions of the NetMigrate client."""

from __future__ import annotations

from netmigrate.protocol.constants import RETRYABLE_STATUSES, Status


class NetMigrateError(Exception):
    """Base of every error the client raises."""


class Timeout(NetMigrateError, TimeoutError):
    """No usable reply after every attempt."""

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
