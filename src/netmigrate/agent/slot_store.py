"""Persist the agent's identity and slot ownership in its own Redis (reserved keys).

State lives in one hash, :data:`~netmigrate.agent.reserved.AGENT_STATE_KEY`: ``format``,
``keyspace``, ``server_id`` and ``owned`` (the owned-slot bitmap, Redis bit order, so
``BITCOUNT`` on a copy of it counts the owned slots). It is written with one HSET, so a crash
never leaves half of it. The slot map's authority is the agents (DESIGN section 3): after a
restart the persisted ownership wins over ``--slots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netmigrate.agent.reserved import AGENT_STATE_KEY
from netmigrate.agent.slots import SlotTable

FORMAT = b"1"


class AgentStateError(RuntimeError):
    """The persisted state cannot be used by this agent (another identity, unknown format)."""


@dataclass(frozen=True)
class PersistedState:
    keyspace: int
    server_id: int
    table: SlotTable


async def load(client: Any) -> PersistedState | None:
    """The persisted state, or None when this Redis has none yet."""
    raw: dict[bytes, bytes] = await client.hgetall(AGENT_STATE_KEY)
    if not raw:
        return None
    if raw.get(b"format") != FORMAT:
        raise AgentStateError(
            f"{AGENT_STATE_KEY.decode()} has format {raw.get(b'format')!r}, "
            f"this agent reads format {FORMAT.decode()}"
        )
    try:
        return PersistedState(
            keyspace=int(raw[b"keyspace"]),
            server_id=int(raw[b"server_id"]),
            table=SlotTable.from_owned_bitmap(raw[b"owned"]),
        )
    except (KeyError, ValueError) as e:
        raise AgentStateError(f"{AGENT_STATE_KEY.decode()} is damaged: {e}") from None


async def save(client: Any, keyspace: int, server_id: int, table: SlotTable) -> None:
    await client.hset(
        AGENT_STATE_KEY,
        mapping={
            b"format": FORMAT,
            b"keyspace": str(keyspace).encode(),
            b"server_id": str(server_id).encode(),
            b"owned": table.owned_bitmap(),
        },
    )


def check_identity(state: PersistedState, keyspace: int, server_id: int) -> None:
    if (state.keyspace, state.server_id) != (keyspace, server_id):
        raise AgentStateError(
            f"this Redis holds the NetMigrate state of keyspace {state.keyspace} server "
            f"{state.server_id}, but the agent was started as keyspace {keyspace} server "
            f"{server_id}; refusing to take over its slots (to reuse this Redis for another "
            f"server, delete the key {AGENT_STATE_KEY.decode()} first)"
        )
