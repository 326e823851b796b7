"""The agent's counters: plain integers bumped on the hot path, snapshotted for the control API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from netmigrate.protocol.constants import Op, Status

#: Counters besides the per-op and per-status ones, with what they count.
COUNTERS: dict[str, str] = {
    "datagrams": "datagrams received on the data port",
    "bad_datagrams": "malformed datagrams (all)",
    "bad_answered": "malformed datagrams answered BAD_REQUEST (their header was readable)",
    "unexpected_replies": "well-formed replies received (an agent takes requests only)",
    "dedup_hits": "retries answered from the dedup window without applying them again",
    "dedup_inflight": "retries that arrived while the original was still in flight",
    "dedup_collisions": "requests refused because their id was known for a different request",
    "batches": "Redis pipelines sent (one round trip each)",
    "redis_commands": "commands sent to Redis",
    "redis_errors": "error replies from Redis (including BUSY-like ones)",
    "redis_reconnects": "times the data-path connection to Redis was re-established",
    "send_errors": "replies the kernel refused to send",
}


@dataclass
class StatsSnapshot:
    requests: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    uptime_seconds: float = 0.0


class AgentStats:
    __slots__ = ("requests", "replies", "started", *COUNTERS)

    def __init__(self) -> None:
        self.requests = [0] * 256  # by op code
        self.replies = [0] * 256  # by status code
        self.started = time.monotonic()
        for name in COUNTERS:
            setattr(self, name, 0)

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            requests={op.name: self.requests[op] for op in Op},
            replies={status.name: self.replies[status] for status in Status},
            counters={name: getattr(self, name) for name in COUNTERS},
            uptime_seconds=time.monotonic() - self.started,
        )
