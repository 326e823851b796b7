"""Make a Redis instance a single-node cluster that owns every slot (DESIGN section 3).

NetMigrate runs each Redis with ``cluster-enabled yes`` as a cluster of one node owning all
16384 slots, so that keys can be enumerated per slot natively. This module checks and, where
needed, completes that state, idempotently. It is shared by the agent (asyncio client) and the
Ansible module ``redis_node`` (sync redis-py client): the decisions are pure functions, the two
entry points only do the I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from netmigrate.protocol import slotset

#: How long to wait for ``cluster_state:ok`` after the slots are complete. A freshly started
#: master waits about 2 s (Redis' CLUSTER_WRITABLE_DELAY) before it reports ok.
STATE_OK_TIMEOUT = 15.0
_POLL = 0.05


class RedisNodeError(RuntimeError):
    """The Redis instance cannot be (or is not) a NetMigrate single-node cluster."""


@dataclass(frozen=True)
class ClusterModeResult:
    #: True when slots were added (or, with check_only, would be).
    changed: bool
    #: Slots added (or that would be added) so that the node owns 0..16383.
    added_slots: int
    #: ``cluster_known_nodes`` of the node: always 1 on success.
    known_nodes: int


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_cluster_info(raw: Any) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict, whether the client parsed it already or returned text."""
    if isinstance(raw, dict):
        return {_text(k): _text(v) for k, v in raw.items()}
    out: dict[str, str] = {}
    for line in _text(raw).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def owned_slots_from_nodes(raw: Any) -> set[int]:
    """Slots that ``CLUSTER NODES`` lists for ``myself`` (importing/migrating marks ignored)."""
    for line in _text(raw).splitlines():
        fields = line.split()
        if len(fields) >= 8 and "myself" in fields[2].split(","):
            slots: set[int] = set()
            for item in fields[8:]:
                if item.startswith("["):
                    continue
                lo, _, hi = item.partition("-")
                slots.update(range(int(lo), int(hi or lo) + 1))
            return slots
    raise RedisNodeError("CLUSTER NODES has no line for this node ('myself')")


def check_cluster_enabled(info_cluster: Any) -> None:
    enabled = parse_cluster_info(info_cluster).get("cluster_enabled", "0")
    if enabled != "1":
        raise RedisNodeError(
            "Redis runs without cluster mode: start redis-server with 'cluster-enabled yes' "
            "(it is a startup option; CONFIG SET cannot switch it on)"
        )


def known_nodes_of(cluster_info: dict[str, str]) -> int:
    known = int(cluster_info.get("cluster_known_nodes", "0"))
    if known != 1:
        raise RedisNodeError(
            f"Redis is a member of a multi-node cluster ({known} known nodes): NetMigrate "
            "needs a standalone single-node cluster; use another instance, or take this one "
            "out of its cluster (CLUSTER RESET) if that is really intended"
        )
    return known


def _addslots_args(ranges: list[tuple[int, int]]) -> list[Any]:
    args: list[Any] = ["CLUSTER", "ADDSLOTSRANGE"]
    for lo, hi in ranges:
        args += [lo, hi]
    return args


def ensure_single_node_cluster(client: Any, *, check_only: bool = False) -> ClusterModeResult:
    """Make the node behind ``client`` (sync ``redis.Redis``) a one-node cluster with all slots.

    Refuses (``RedisNodeError``) a Redis without cluster mode and a member of a multi-node
    cluster. Otherwise adds the slots it lacks and waits until it reports ``cluster_state:ok``.
    With ``check_only`` nothing is changed and nothing waited for: the result says what would be.
    """
    check_cluster_enabled(client.info("cluster"))
    known = known_nodes_of(parse_cluster_info(client.execute_command("CLUSTER", "INFO")))
    missing = slotset.missing(owned_slots_from_nodes(client.execute_command("CLUSTER", "NODES")))
    added = sum(hi - lo + 1 for lo, hi in missing)
    if check_only:
        return ClusterModeResult(changed=bool(missing), added_slots=added, known_nodes=known)
    if missing:
        client.execute_command(*_addslots_args(missing))
    deadline = time.monotonic() + STATE_OK_TIMEOUT
    while True:
        info = parse_cluster_info(client.execute_command("CLUSTER", "INFO"))
        if info.get("cluster_state") == "ok":
            break
        if time.monotonic() > deadline:
            raise RedisNodeError(_not_ok_message(info))
        time.sleep(_POLL)
    return ClusterModeResult(changed=bool(missing), added_slots=added, known_nodes=known)


async def ensure_single_node_cluster_async(
    client: Any, *, check_only: bool = False
) -> ClusterModeResult:
    """:func:`ensure_single_node_cluster` for an asyncio client (``redis.asyncio.Redis``)."""
    check_cluster_enabled(await client.info("cluster"))
    known = known_nodes_of(parse_cluster_info(await client.execute_command("CLUSTER", "INFO")))
    nodes = await client.execute_command("CLUSTER", "NODES")
    missing = slotset.missing(owned_slots_from_nodes(nodes))
    added = sum(hi - lo + 1 for lo, hi in missing)
    if check_only:
        return ClusterModeResult(changed=bool(missing), added_slots=added, known_nodes=known)
    if missing:
        await client.execute_command(*_addslots_args(missing))
    deadline = time.monotonic() + STATE_OK_TIMEOUT
    while True:
        info = parse_cluster_info(await client.execute_command("CLUSTER", "INFO"))
        if info.get("cluster_state") == "ok":
            break
        if time.monotonic() > deadline:
            raise RedisNodeError(_not_ok_message(info))
        await asyncio.sleep(_POLL)
    return ClusterModeResult(changed=bool(missing), added_slots=added, known_nodes=known)


def _not_ok_message(info: dict[str, str]) -> str:
    return (
        f"Redis owns all slots but reports cluster_state:{info.get('cluster_state', '?')} "
        f"after {STATE_OK_TIMEOUT:.0f} s (slots ok: {info.get('cluster_slots_ok', '?')})"
    )
