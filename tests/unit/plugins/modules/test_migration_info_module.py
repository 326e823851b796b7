"""Unit tests of netmigrate.core.migration_info: it only reads, maps results and errors.
The library is replaced here; tests/collection reads real agents."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import migration_info

import netmigrate.migration as mig

ARGS: dict[str, Any] = {"source": {"server_id": 1, "control": "127.0.0.1:1"}}


class FakeResult:
    def to_json(self, slots: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {"migration_id": "m1", "state": "DONE", "changed": True}
        if slots:
            doc["slots"] = [{"slot": 7}]
        return doc


def fake_status(
    monkeypatch: pytest.MonkeyPatch,
    *,
    found: list[Any] | None = None,
    error: Exception | None = None,
) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    async def status(source: Any, migration_id: Any, *, include_slots: bool) -> list[Any]:
        seen.append((source.server_id, migration_id, include_slots))
        if error is not None:
            raise error
        return found or []

    monkeypatch.setattr(mig, "status", status)
    return seen


def test_reports_migrations_never_changed(run_p4_module, monkeypatch) -> None:
    seen = fake_status(monkeypatch, found=[FakeResult()])
    result = run_p4_module(migration_info, {**ARGS, "migration_id": "m1", "include_slots": True})
    assert result["changed"] is False
    assert result["migrations"] == [{"migration_id": "m1", "state": "DONE", "slots": [{"slot": 7}]}]
    assert seen == [(1, "m1", True)]


def test_unknown_migration_is_an_empty_list(run_p4_module, monkeypatch) -> None:
    fake_status(monkeypatch, error=mig.MigrationError("no such migration", code="NOT_FOUND"))
    result = run_p4_module(migration_info, {**ARGS, "migration_id": "nope"})
    assert result["changed"] is False and result["migrations"] == []


def test_unreachable_agent_fails_with_code(run_p4_module, monkeypatch) -> None:
    fake_status(monkeypatch, error=mig.MigrationError("agent 1 unreachable", code="UNAVAILABLE"))
    result = run_p4_module(migration_info, ARGS)
    assert result["failed"] and result["code"] == "UNAVAILABLE"
    assert "cannot read the migrations (UNAVAILABLE)" in result["msg"]
