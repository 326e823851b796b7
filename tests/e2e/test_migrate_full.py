"""Move every slot holding 100,000 keys from redis1 to redis2 under concurrent load.

Proves, on the real stack (namespaces, lab switch over AF_PACKET, redis-server, agents): no
acknowledged write lost, no stale read, no increment applied twice (history checker), no
non-retryable client error, and afterwards every key lives exactly once, at the target.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netmigrate.lab.stack import Stack, StackConfig, stack_up
from netmigrate.migration import MigrationOptions, run
from netmigrate.protocol.constants import SLOT_COUNT

from .conftest import agent, assert_clean, count_prefix, keyspace, redis_of, switch

PRELOAD = 100_000


def test_stack_up_is_idempotent(stack: Stack, stack_config: StackConfig) -> None:
    again = stack_up(stack_config)
    assert again.changed is False, again.actions
    assert again.to_dict() | {"changed": False, "actions": []} == stack.to_dict() | {
        "changed": False,
        "actions": [],
    }
    recorded = json.loads((Path(stack.run_dir) / "stack.json").read_text())
    assert recorded["servers"][0]["server_id"] == 1
    assert redis_of(stack, 1).ping()


def test_load_without_migration_is_clean(stack: Stack, load_factory) -> None:
    lp = load_factory("--preload", "2000", "--concurrency", "16", name="stable")
    lp.wait_ready()
    import time

    time.sleep(3)
    doc = lp.stop()
    assert_clean(doc)
    assert doc["errors_total"]["retryable"] == 0
    assert sum(doc["timeline"]["ops"]) == doc["ops"]
    # The final read saw exactly what the checker modelled: every preloaded key not deleted.
    assert doc["final_present"] <= doc["keys_touched"]


# The migration itself may take up to 420 s on a loaded 2-core machine (its own timeout).
@pytest.mark.timeout(900)
def test_full_migration_100k_keys_under_load(stack: Stack, load_factory, tmp_path: Path) -> None:
    lp = load_factory(
        "--preload", str(PRELOAD), "--preload-direct", "--concurrency", "16", name="full"
    )
    lp.wait_ready()
    result = asyncio.run(
        run(
            agent(stack, 1),
            agent(stack, 2),
            range(SLOT_COUNT),
            keyspace=keyspace(stack),
            switch=switch(stack),
            options=MigrationOptions(parallel=64, batch=512, grace=0.5),
            timeout=420,
        )
    )
    doc = lp.stop()
    assert result.state == "FINALIZED", result.message
    assert result.slots_done == SLOT_COUNT
    # Fewer than PRELOAD when the load deleted keys, or wrote them at the target, first.
    assert 0 < result.keys_copied <= PRELOAD + doc["keys_touched"] + 2000
    assert_clean(doc)

    prefix_doc_key = doc["key_prefix"]
    src, dst = redis_of(stack, 1), redis_of(stack, 2)
    # Nothing of the keyspace is left at the source...
    assert count_prefix(src, prefix_doc_key) == 0
    # ...and the target holds every key exactly as the final read saw it: the preloaded keys
    # the load never touched, plus the touched keys (data and counters) that exist at the end.
    expected = PRELOAD - doc["keys_touched"] + doc["final_present"]
    expected += doc["final_counters_present"]
    assert count_prefix(dst, prefix_doc_key) == expected

    mig = tmp_path / "migration.json"
    mig.write_text(json.dumps(result.to_json(slots=False)))
    out = tmp_path / "report"
    rc = subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "bench", "report", "--load", str(lp.out),
         "--migration", str(mig), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rc.returncode == 0, rc.stderr + rc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["migrated_slots"] == SLOT_COUNT
    assert report["checker"]["ok"] is True
    assert report["throughput_before_ops"] > 0 and report["throughput_during_ops"] > 0
    assert (out / "migration-under-load.png").stat().st_size > 1000
    print(rc.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "load"}, indent=1))
