"""How agents say that a Redis lost its data (#12.8): one wording, so that a source can tell
a target's refusal for lost data (final: retrying cannot bring the data back) from a passing
failure (retried)."""

from __future__ import annotations

#: Part of every message that reports a lost Redis dataset, on either side.
DATA_LOST = "Redis lost its data"


def describe_loss(server_id: int, run_before: str, run_now: str, detail: str) -> str:
    """``server 2: Redis lost its data (run_id 1f3a.. -> 9c2e..): <detail>``; the run ids
    tell a restart (new run id) from a FLUSHALL or an eviction (same run id)."""
    runs = f"run_id {run_before or '?'} -> {run_now or '?'}"
    return f"server {server_id}: {DATA_LOST} ({runs}): {detail}"


def is_data_loss(message: str) -> bool:
    return DATA_LOST in message
