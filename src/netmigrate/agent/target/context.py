"""What the parts of the target side share: their dependencies, the slots migrating in, the
tasks they spawn and the counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from netmigrate.agent.interfaces import RequestPath
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.peers import Peers
from netmigrate.agent.resp import ConnectionLost, ReplyError, collect_replies
from netmigrate.agent.slots import SlotTable
from netmigrate.agent.target.model import Incoming, LostSlot


def _counters() -> dict[str, int]:
    return {
        "target_double_read_miss": 0,
        "target_held": 0,
        "target_hold_busy": 0,
        "target_pulls": 0,
        "target_pull_failures": 0,
        "target_keys_restored": 0,
        "target_keys_skipped_dirty": 0,
        "target_pieces": 0,
        "target_ids_installed": 0,
        "target_stale_transitions": 0,
        "target_slots_rolled_back": 0,
        "target_slots_lost": 0,
    }


@dataclass
class TargetContext:
    dp: RequestPath
    table: SlotTable
    store: MigrationStore
    #: A redis-py client for control-plane calls (bookkeeping keys, request id records).
    admin: Any
    peers: Peers
    server_id: int
    slots: dict[int, Incoming] = field(default_factory=dict)
    #: Slots that migrated in when Redis lost its data (slot -> what is known of them).
    lost: dict[int, LostSlot] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Counters for GetStats.
    counters: dict[str, int] = field(default_factory=_counters)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def still_in(self, inc: Incoming) -> bool:
        return self.slots.get(inc.slot) is inc

    async def redis(self, commands: list[bytes]) -> list[Any]:
        """Run commands on the data connection (queued behind every request before them) and
        return their replies; a Redis error or a lost connection raises."""
        callbacks, done = collect_replies(len(commands))
        self.dp.flush(commands, callbacks)
        replies = await done
        for reply in replies:
            if isinstance(reply, ConnectionLost | ReplyError):
                raise reply
        return replies
