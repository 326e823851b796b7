"""NetMigrate client library (sync and asyncio).

``AsyncClient`` and ``Client`` speak the NetMigrate UDP protocol to a keyspace's service
address: request ids, per-request timeouts with retries (same id, RETRY flag), retries of
WRONG_OWNER / BUSY / MISS after a backoff until a per-call deadline, and the double-read merge
during migrations. Every error says whether the call may have taken effect
(``NetMigrateError.outcome_unknown``).
"""

from netmigrate.client.aio import DEFAULT_DEADLINE, AsyncClient, ClientStats
from netmigrate.client.errors import (
    ClientClosed,
    CommandRefused,
    NetMigrateError,
    OutcomeUnknown,
    RedisReplyError,
    RetryBudgetSpent,
    ServerError,
    Timeout,
    TooLarge,
)
from netmigrate.client.merge import merge_double_read
from netmigrate.client.sync import Client, Pipeline

__all__ = [
    "DEFAULT_DEADLINE",
    "AsyncClient",
    "Client",
    "ClientClosed",
    "ClientStats",
    "CommandRefused",
    "NetMigrateError",
    "OutcomeUnknown",
    "Pipeline",
    "RedisReplyError",
    "RetryBudgetSpent",
    "ServerError",
    "Timeout",
    "TooLarge",
    "merge_double_read",
]
