"""Unit tests of netmigrate.core.migration: input errors before any agent is contacted, check
mode asks for a plan and never starts anything, results and failures as Ansible sees them.
The library is replaced here (the real migrations run in tests/collection and tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import migration

import netmigrate.migration as mig

BASE: dict[str, Any] = {
    "source": {"server_id": 1, "control": "127.0.0.1:1"},
    "target": {"server_id": 2, "control": "127.0.0.1:2"},
    "keyspace": {"address": "10.0.1.1", "port": 50000},
    "slots": "0-9",
}


class FakeResult:
    def __init__(self, changed: bool, message: str = "done") -> None:
        self.changed = changed
        self.message = message

    def to_json(self, slots: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {"state": "FINALIZED", "changed": self.changed}
        if slots:
            doc["slots"] = [{"slot": 0, "outcome": "MOVED"}]
        return doc


class Calls:
    def __init__(self) -> None:
        self.names: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    c = Calls()

    async def plan(*args: Any, **kwargs: Any) -> FakeResult:
        c.names.append(("plan", args, kwargs))
        return FakeResult(changed=True, message="10 slots would move")

    async def run(*args: Any, **kwargs: Any) -> FakeResult:
        c.names.append(("run", args, kwargs))
        return FakeResult(changed=False, message="already finished")

    monkeypatch.setattr(mig, "plan", plan)
    monkeypatch.setattr(mig, "run", run)
    return c


def test_missing_target_for_present_fails(run_p4_module, calls: Calls) -> None:
    args = {k: v for k, v in BASE.items() if k != "target"}
    result = run_p4_module(migration, args)
    assert result["failed"] and "target" in result["msg"]
    assert calls.names == []


def test_same_source_and_target_fails(run_p4_module, calls: Calls) -> None:
    args = {**BASE, "target": {"server_id": 1, "control": "127.0.0.1:2"}}
    result = run_p4_module(migration, args)
    assert result["failed"] and "same server" in result["msg"]
    assert calls.names == []


@pytest.mark.parametrize("slots", ["16384", "5-3", "x"])
def test_bad_slot_ranges_fail_before_any_call(run_p4_module, calls: Calls, slots: str) -> None:
    result = run_p4_module(migration, {**BASE, "slots": slots})
    assert result["failed"] and result["msg"].startswith("slots:")
    assert calls.names == []


def test_check_mode_plans_and_starts_nothing(run_p4_module, calls: Calls) -> None:
    result = run_p4_module(migration, {**BASE, "_ansible_check_mode": True})
    assert result["changed"] is True
    assert result["msg"] == "10 slots would move"
    assert [call[0] for call in calls.names] == ["plan"]
    assert calls.names[0][1][2] == list(range(10))


def test_finished_migration_reports_no_change(run_p4_module, calls: Calls) -> None:
    result = run_p4_module(migration, {**BASE, "batch": 64, "parallel": 2})
    assert result["changed"] is False
    assert result["slots"] == [{"slot": 0, "outcome": "MOVED"}]
    assert "changed" not in result["migration"]
    kwargs = calls.names[0][2]
    assert kwargs["options"].batch == 64 and kwargs["options"].parallel == 2


def test_library_failure_is_reported_with_its_code(
    run_p4_module, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run(*args: Any, **kwargs: Any) -> None:
        raise mig.MigrationError("target agent unreachable", code="UNAVAILABLE")

    monkeypatch.setattr(mig, "run", run)
    result = run_p4_module(migration, BASE)
    assert result["failed"]
    assert result["msg"] == "migration failed (UNAVAILABLE): target agent unreachable"
    assert result["code"] == "UNAVAILABLE"


def test_switch_takes_the_p4runtime_options_with_tls(run_p4_module, calls: Calls) -> None:
    switch = {
        "address": "sw:9559",
        "tls": True,
        "ca_cert": "/etc/nm/p4-ca.pem",
        "client_cert": "/etc/nm/p4.pem",
        "client_key": "/etc/nm/p4.key",
    }
    result = run_p4_module(migration, {**BASE, "switch": switch})
    assert not result.get("failed"), result
    endpoint = calls.names[0][2]["switch"]
    assert (endpoint.address, endpoint.device_id, endpoint.election_id) == ("sw:9559", 1, 10)
    assert (str(endpoint.tls.ca), str(endpoint.tls.cert), str(endpoint.tls.key)) == (
        "/etc/nm/p4-ca.pem",
        "/etc/nm/p4.pem",
        "/etc/nm/p4.key",
    )

    without_key = {k: v for k, v in switch.items() if k != "client_key"}
    half = run_p4_module(migration, {**BASE, "switch": without_key})
    assert half["failed"] and "client_cert, client_key" in half["msg"]


def test_one_election_id_default_everywhere() -> None:
    """The collection's P4 modules, the migration module's switch, the library and the lab
    agree."""
    from ansible_collections.netmigrate.core.plugins.module_utils import _p4runtime

    from netmigrate.lab.stack import ELECTION_ID

    default = mig.SwitchEndpoint("x").election_id
    assert default == ELECTION_ID
    assert _p4runtime.p4runtime_argument_spec()["election_id"]["default"] == default
    switch_options = migration.ARGUMENT_SPEC["switch"]["options"]
    assert switch_options["election_id"]["default"] == default
    assert default == _p4runtime.DEFAULT_ELECTION_ID


def test_result_carries_what_finalize_verified(
    run_p4_module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrate.yml asserts on these fields instead of reading the slot map itself."""
    result = mig.MigrationResult(
        migration_id="ks50000-1to2-all",
        state="FINALIZED",
        changed=True,
        message="migration ks50000-1to2-all done",
        source_id=1,
        target_id=2,
        slots_total=16384,
        slots_done=64,
        slots_skipped=16320,
        finalize=mig.FinalizeResult(
            changed=True, keys_deleted=3, slots_finalized=64, switch_verified=True
        ),
    )
    seen: list[list[int]] = []

    async def run(source: Any, target: Any, slots: list[int], **kwargs: Any) -> Any:
        seen.append(slots)
        return result

    monkeypatch.setattr(mig, "run", run)
    out = run_p4_module(migration, {**BASE, "slots": "all", "switch": {"address": "sw:1"}})
    assert seen == [list(range(16384))]
    assert out["migration"]["state"] == "FINALIZED"
    assert out["migration"]["slots_failed"] == 0
    assert out["migration"]["finalize"]["switch_verified"] is True
    assert out["migration"]["finalize"]["slots_finalized"] == 64
