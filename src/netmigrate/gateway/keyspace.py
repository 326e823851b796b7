"""The gateway's keyspace: every command one NetMigrate request through the switch, sent by our
client (``netmigrate.client``), which retries, follows migrations and merges double reads.

RESP2 only (decision D26): the agents run commands inside Lua scripts, where RESP3's null
inside an array becomes a hole of a Lua table, so a RESP3 reply cannot make the trip
faithfully. The session answers ``HELLO 3`` with ``NOPROTO`` and stays on RESP2, as a Redis
without RESP3 does; clients fall back to RESP2 on that answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from netmigrate.client.aio import AsyncClient
from netmigrate.client.errors import (
    CommandRefused,
    NetMigrateError,
    RedisReplyError,
    ServerError,
    Timeout,
)
from netmigrate.protocol.constants import Status
from netmigrate.rediscmd.resp import Error, encode
from netmigrate.rediscmd.table import Classified


def _error(message: str) -> bytes:
    return encode(Error(message))


def error_reply(e: NetMigrateError) -> bytes:
    """The RESP error an application gets for a request NetMigrate could not complete.

    Redis' own errors keep their text; NetMigrate's say what happened, so that an application
    can tell a refusal (nothing ran) from an unknown outcome (a timeout: it may have run)."""
    if isinstance(e, RedisReplyError):
        return _error(e.message)
    if isinstance(e, CommandRefused):
        return _error(f"ERR {e}")
    if isinstance(e, ServerError):
        if e.status == Status.CROSSSLOT:
            return _error("CROSSSLOT Keys in request don't hash to the same slot")
        return _error(f"ERR NetMigrate {e.status.name}: {e.message}".rstrip(": "))
    if isinstance(e, Timeout):
        return _error(f"ERR NetMigrate: no answer from the keyspace, outcome unknown ({e})")
    return _error(f"ERR NetMigrate: {e}")


class ClientKeyspace:
    """:class:`~netmigrate.gateway.session.Keyspace` over an open :class:`AsyncClient`."""

    #: RESP versions the replies can be given in (see the module's docstring).
    protocols = frozenset({2})

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def command(self, request: Classified, args: Sequence[bytes], resp: int) -> bytes:
        try:
            return await self.client.command_raw(request, list(args))
        except NetMigrateError as e:
            return error_reply(e)

    async def transaction(
        self, slot: int, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> bytes:
        try:
            return await self.client.transaction_classified([(c, list(a)) for c, a in requests])
        except NetMigrateError as e:
            return error_reply(e)
