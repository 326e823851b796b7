"""NetMigrate client library (sync and asyncio).

``AsyncClient`` and ``Client`` speak the NetMigrate UDP protocol to a keyspace's service
address: request ids, per-request timeouts with retries (same id, RETRY flag), retries of
WRONG_OWNER / BUSY / MISS after a backoff, and the double-read merge during migrations.
"""

from netmigrate.client.aio import AsyncClient, ClientStats
from netmigrate.client.errors import (
    CommandRefused,
    NetMigrateError,
    RedisReplyError,
    ServerError,
    Timeout,
    TooLarge,
)
from netmigrate.client.merge import merge_double_read
from netmigrate.client.sync import Client, Pipeline

__all__ = [
    "AsyncClient",
    "Client",
    "ClientStats",
    "CommandRefused",
    "NetMigrateError",
    "Pipeline",
    "RedisReplyError",
    "ServerError",
    "Timeout",
    "TooLarge",
    "merge_double_read",
]
