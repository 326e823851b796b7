"""A keyspace that declares RESP2 only: the session answers ``HELLO 3`` with Redis' NOPROTO and
keeps the connection on RESP2 (unit test: a stand-in keyspace, no server)."""

from __future__ import annotations

from collections.abc import Sequence

from netmigrate.gateway.acl import Acl
from netmigrate.gateway.session import Session
from netmigrate.rediscmd.table import Classified, CommandTable


class Resp2Only:
    protocols = frozenset({2})

    async def batch(
        self, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> list[bytes]:
        assert resp == 2
        return [b"$1\r\nv\r\n"] * len(requests)

    async def transaction(self, slot, requests, resp):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


async def test_hello_3_is_refused_and_resp2_kept() -> None:
    session = Session(Resp2Only(), CommandTable.shipped(), Acl.no_auth())
    refused = await session.execute([b"HELLO", b"3"])
    assert refused == b"-NOPROTO sorry, this protocol version is not supported.\r\n"
    assert session.state.resp == 2
    hello2 = await session.execute([b"HELLO", b"2"])
    assert hello2.startswith(b"*14\r\n")  # RESP2: the map as a flat array
    assert await session.execute([b"GET", b"k"]) == b"$1\r\nv\r\n"


async def test_a_transaction_of_commands_without_keys_runs() -> None:
    class Recording(Resp2Only):
        def transaction(self, slot, requests, resp):  # type: ignore[no-untyped-def]
            self.slot = slot
            return _done(b"*1\r\n+PONG\r\n")

    keyspace = Recording()
    session = Session(keyspace, CommandTable.shipped(), Acl.no_auth())
    assert await session.execute([b"MULTI"]) == b"+OK\r\n"
    # PING is keyspace-wide by its tips, but every server answers it alike: one answers here.
    assert await session.execute([b"PING"]) == b"+QUEUED\r\n"
    assert await session.execute([b"EXEC"]) == b"*1\r\n+PONG\r\n" and keyspace.slot == 0


async def _done(value: bytes) -> bytes:
    return value
