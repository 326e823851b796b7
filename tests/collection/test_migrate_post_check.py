"""migrate.yml's post-check, run as the playbook writes it, on recorded results.

The post-check must pass only when finalize verified the switch for the migration; before,
it recomputed slot ranges from the switch's map in Jinja, where ``slots: all`` became the
one range 0-0 (``'all' | int`` is 0), so a map that sends every slot but 0 to the source
passed. The task is taken from playbooks/migrate.yml itself (the last assert before the
report) and run on localhost with the variables the earlier tasks would have registered;
both the old and the new post-check find what they read among them.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from collection_helpers import REPO_ROOT, Ansible

TARGET = {"server_id": 2, "control": "10.0.0.12:7000"}


def _post_check() -> dict[str, Any]:
    (play,) = yaml.safe_load((REPO_ROOT / "playbooks" / "migrate.yml").read_text())
    tasks = play["tasks"]
    report = next(i for i, t in enumerate(tasks) if t["name"] == "Report")
    return next(t for t in reversed(tasks[:report]) if "ansible.builtin.assert" in t)


def _recorded(verified: bool, slots_at_target: tuple[int, int]) -> dict[str, Any]:
    """What a migration of every slot from server 1 to 2 left: the migration's result and, for
    a post-check that reads them itself, the source's listing and the switch's map."""
    first, last = slots_at_target
    ranges = [{"first": first, "last": last, "owner": 2, "target": 0}]
    if last < 16383:
        ranges.append({"first": last + 1, "last": 16383, "owner": 1, "target": 0})
    migration = {
        "migration_id": "ks50000-1to2-all",
        "state": "FINALIZED",
        "slots_total": 16384,
        "slots_done": 16384,
        "slots_failed": 0,
        "finalize": {
            "changed": True,
            "keys_deleted": 10,
            "slots_finalized": 16384,
            "switch_verified": verified,
            "slots_reconciled": 0,
        },
    }
    return {
        "netmigrate_migration_slots": "all",
        "netmigrate_target_endpoint": TARGET,
        "netmigrate_migrated": {"migration": migration, "msg": "done"},
        "netmigrate_info": {"migrations": [migration]},
        "netmigrate_slot_map": {"ranges": ranges},
    }


@pytest.mark.parametrize(
    ("verified", "at_target", "passes"),
    [
        # Finalize verified the switch: every slot at the target.
        (True, (0, 16383), True),
        # Not verified: the switch sends slots 100-16383 to the source.
        (False, (0, 99), False),
    ],
)
def test_post_check_for_all_slots(
    ansible: Ansible, verified: bool, at_target: tuple[int, int], passes: bool
) -> None:
    book = ansible.write(
        "post_check.yml",
        [
            {
                "name": "migrate.yml's post-check on recorded results",
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "vars": _recorded(verified, at_target),
                "tasks": [_post_check()],
            }
        ],
    )
    run = ansible.playbook(book, "localhost,")
    assert (run.returncode == 0) == passes, run.text()[-3000:]
    if not passes:
        assert "ks50000-1to2-all" in run.text()
