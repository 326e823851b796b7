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
