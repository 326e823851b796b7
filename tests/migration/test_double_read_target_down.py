"""Issue #12, item 1, end to end: a double read never takes the source's frozen copy when the
target cannot answer.

Real agents and real redis-servers, the switch's steering modelled by the relay. A slot is
migrating; ``SET k=v2`` is acknowledged by the target; then the target's data connection to its
Redis drops and stays down for a while (killed, and Redis paused so that the reconnection
waits). A double-read GET meanwhile gets BUSY from the target and the frozen v1 from the source:
the client must retry until the target answers v2, never return v1.
"""

from __future__ import annotations

import asyncio

from migration_helpers import KEYSPACE, keys_in, until

from netmigrate import migration
from netmigrate.client import AsyncClient
from netmigrate.migration import MigrationOptions
from netmigrate.protocol.constants import Status

SLOT = 4242
#: How long the target's Redis holds its clients (the reconnection included) after the kill.
PAUSE_MS = 800


def _drop_data_connections(redis) -> int:  # type: ignore[no-untyped-def]
    """Kill the agent's data-path connections and pause Redis, in one pipelined write: the
    agent cannot reconnect before the pause is in place."""
    admin = redis.client()
    ids = [c["id"] for c in admin.client_list() if c.get("name") == "netmigrate-agent"]
    pipe = admin.pipeline(transaction=False)
    for cid in ids:
        pipe.execute_command("CLIENT", "KILL", "ID", cid)
    pipe.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    pipe.execute()
    return len(ids)


async def test_double_read_retries_while_the_target_cannot_read(pair) -> None:
    p = await pair(relay=True)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    keys = keys_in(SLOT, 60)
    for k in keys:
        ra.set(k, b"v1")
    key = keys[-1]
    run = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [SLOT],
            keyspace=p.keyspace,
            options=MigrationOptions(batch=2, rate=20, grace=0, poll=0.05),
        )
    )
    incoming = p.target.target._slots  # the target's bookkeeping, observed
    await until(lambda: SLOT in incoming and incoming[SLOT].ids_received)
    events: list[str] = []
    async with AsyncClient(
        p.service, KEYSPACE, retries=200, max_backoff=0.02, on_event=events.append
    ) as client:
        assert await client.set(key, b"v2") is True  # steered to the target and acknowledged
        assert rb.get(key) == b"v2" and ra.get(key) == b"v1"
        busy_before = p.target.stats.replies[Status.BUSY]
        assert await asyncio.to_thread(_drop_data_connections, p.redis_b) >= 1
        value = await client.get(key)
    assert value == b"v2", "a double read took the source's frozen copy"
    # The target did answer BUSY while its connection was down, and the client retried it.
    assert p.target.stats.replies[Status.BUSY] > busy_before
    assert "BUSY" in events and "DOUBLE_READ" in events
    result = await asyncio.wait_for(run, 60)
    assert result.state == "FINALIZED"
    assert rb.get(key) == b"v2"
