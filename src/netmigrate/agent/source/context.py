"""What the steps of the source side share: their dependencies, the migrations, the slots in
flight and the counters (one object, so a step needs no reference to another step's state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netmigrate.agent.dedup import DedupWindow
from netmigrate.agent.heat import SlotHeat
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.peers import Peers
from netmigrate.agent.slots import SlotTable
from netmigrate.agent.source.keys import SourceKeys
from netmigrate.agent.source.model import Migration
from netmigrate.agent.source.persistence import OutgoingSlots


def _counters() -> dict[str, int]:
    return {
        "source_transitions_sent": 0,
        "source_acks": 0,
        "source_stray_acks": 0,
        "source_stale_acks": 0,
        "source_keys_copied": 0,
        "source_batches": 0,
        "source_pieces": 0,
        "source_pulls_refused_big": 0,
        "source_pulls_served": 0,
        "source_keys_finalized": 0,
        "source_ids_from_records": 0,
        "source_records_read": 0,
    }


@dataclass
class SourceContext:
    table: SlotTable
    store: MigrationStore
    dedup: DedupWindow
    #: A redis-py client for control-plane calls (the Redis version of a plan).
    admin: Any
    peers: Peers
    keyspace: int
    server_id: int
    #: The service address clients send to (HOST, PORT), unless a request names one.
    service: tuple[str, int] | None
    #: How peers reach this agent's control service (when the controller does not say).
    control_address: str
    slot_retry_seconds: float
    slots: OutgoingSlots
    keys: SourceKeys
    migrations: dict[str, Migration] = field(default_factory=dict)
    #: Recent requests per slot (the data path counts them): the order slots move in.
    heat: SlotHeat = field(default_factory=SlotHeat)
    #: Counters for GetStats.
    counters: dict[str, int] = field(default_factory=_counters)
