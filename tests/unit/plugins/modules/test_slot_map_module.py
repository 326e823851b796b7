"""Unit tests of netmigrate.core.slot_map: the library's have-vs-want diff as ranges, input
errors before any connection, and check mode with a fake slot map (the real one is in
tests/collection)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import slot_map

from netmigrate import p4rt
from netmigrate.p4rt import SlotEntry, slotmap
from netmigrate.p4rt.slotmap import SlotMapDiff

BASE = {"address": "sw:1", "keyspace_id": 1, "service_address": "10.9.0.100", "service_port": 5}


def test_slot_ranges_and_changed_ranges() -> None:
    slots = {0: SlotEntry(1), 1: SlotEntry(1), 2: SlotEntry(2, 1), 4: SlotEntry(2, 1)}
    assert slotmap.slot_ranges(slots) == [
        {"first": 0, "last": 1, "owner": 1, "target": 0},
        {"first": 2, "last": 2, "owner": 2, "target": 1},
        {"first": 4, "last": 4, "owner": 2, "target": 1},
    ]
    before = {0: SlotEntry(), 1: SlotEntry(), 2: SlotEntry(1), 3: SlotEntry()}
    after = {0: SlotEntry(1), 1: SlotEntry(1), 2: SlotEntry(1), 3: SlotEntry(1)}
    diff = SlotMapDiff(before, after)
    assert diff.changed and list(diff.changes) == [0, 1, 3]
    assert diff.changed_ranges() == [
        {
            "first": 0,
            "last": 1,
            "before": {"owner": 0, "target": 0},
            "after": {"owner": 1, "target": 0},
        },
        {
            "first": 3,
            "last": 3,
            "before": {"owner": 0, "target": 0},
            "after": {"owner": 1, "target": 0},
        },
    ]
    assert diff.diff()["after"]["ranges"] == [
        {"first": 0, "last": 1, "owner": 1, "target": 0},
        {"first": 3, "last": 3, "owner": 1, "target": 0},
    ]
    assert not SlotMapDiff(after, after).changed
    assert SlotMapDiff.of_changes({5: ([1, 0], [1, 2])}).changes == {
        5: (SlotEntry(1), SlotEntry(1, 2))
    }


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([{"first": 5, "last": 3}], "slot range 5-3 is not within 0-16383"),
        ([{"first": 16384}], "slot range 16384-16384 is not within"),
        ([{"first": 0, "last": 2}, {"first": 2}], "slot 2 is in more than one range"),
        ([{"first": 0, "owner": 255}], "slot map owner 255 out of 0..254"),
    ],
)
def test_bad_ranges_fail_before_connecting(
    run_p4_module, fake_session, ranges: list[dict[str, Any]], expected: str
):
    result = run_p4_module(slot_map, {**BASE, "state": "present", "ranges": ranges})
    assert result["failed"] is True
    assert expected in result["msg"]
    assert fake_session.instances == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"address": "a:1"}, "missing required arguments"),
        ({**BASE, "state": "reconciled"}, "state must be one of: read, present"),
    ],
)
def test_argument_spec_refuses_bad_input(run_p4_module, args: dict[str, Any], expected: str):
    result = run_p4_module(slot_map, args)
    assert result["failed"] is True
    assert expected in result["msg"]


class FakeSlotMapIO:
    """Slot map of a fake switch: every slot owner 0 except slot 1 (owner 2)."""

    writes: list[dict[int, SlotEntry]] = []

    def __init__(self, session: Any, keyspace: Any, **kw: Any) -> None:
        self.keyspace = keyspace

    async def read(self, slots: Any = None) -> dict[int, SlotEntry]:
        return {s: SlotEntry(2) if s == 1 else SlotEntry() for s in (slots or range(4))}

    async def write(self, entries: dict[int, SlotEntry]) -> dict[int, SlotEntry]:
        FakeSlotMapIO.writes.append(dict(entries))
        return dict(entries)


@pytest.fixture
def fake_io(fake_session, monkeypatch: pytest.MonkeyPatch) -> type[FakeSlotMapIO]:
    FakeSlotMapIO.writes = []
    monkeypatch.setattr(slotmap, "SlotMapIO", FakeSlotMapIO)
    return FakeSlotMapIO


def test_check_mode_writes_nothing_and_diffs_the_changes(run_p4_module, fake_io):
    args = {**BASE, "state": "present", "ranges": [{"first": 0, "last": 2, "owner": 2}]}
    result = run_p4_module(slot_map, {**args, "_ansible_check_mode": True, "_ansible_diff": True})
    assert result["changed"] is True and result["changed_slots"] == 2
    assert result["changed_ranges"] == [
        {
            "first": 0,
            "last": 0,
            "before": {"owner": 0, "target": 0},
            "after": {"owner": 2, "target": 0},
        },
        {
            "first": 2,
            "last": 2,
            "before": {"owner": 0, "target": 0},
            "after": {"owner": 2, "target": 0},
        },
    ]
    assert result["diff"]["before"]["ranges"] == [
        {"first": 0, "last": 0, "owner": 0, "target": 0},
        {"first": 2, "last": 2, "owner": 0, "target": 0},
    ]
    assert result["ranges"] == [{"first": 0, "last": 2, "owner": 2, "target": 0}]
    assert fake_io.writes == []

    written = run_p4_module(slot_map, args)
    assert written["changed"] is True
    assert fake_io.writes == [{0: SlotEntry(2), 2: SlotEntry(2)}]


def test_slot_map_error_is_reported_with_its_code(
    run_p4_module, fake_session, raising, monkeypatch: pytest.MonkeyPatch
):
    class Failing(FakeSlotMapIO):
        read = raising(
            p4rt.SlotMapError("no answer for slot 0", code="DEADLINE_EXCEEDED", operation="SlotMap")
        )

    monkeypatch.setattr(slotmap, "SlotMapIO", Failing)
    result = run_p4_module(slot_map, BASE)
    assert result["failed"] is True
    assert (
        result["msg"] == "P4Runtime target sw:1: SlotMap: DEADLINE_EXCEEDED: no answer for slot 0"
    )
    assert result["grpc_code"] == "DEADLINE_EXCEEDED"


# ------------------------------------------------------------------- wanted map from agents

AGENTS = [{"server_id": 1, "control": "127.0.0.1:7001"}, {"server_id": 2, "control": "h:7002"}]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"ranges": [{"first": 1}]}, "parameters are mutually exclusive: ranges|agents"),
        ({"purge": True}, "parameters are mutually exclusive: purge|agents"),
    ],
)
def test_agents_exclude_an_explicit_map(run_p4_module, extra: dict[str, Any], expected: str):
    result = run_p4_module(slot_map, {**BASE, "state": "present", "agents": AGENTS, **extra})
    assert result["failed"] is True
    assert expected in result["msg"]


def test_bad_agent_fails_before_connecting(run_p4_module, fake_session):
    agents = [{"server_id": 0, "control": "127.0.0.1:7001"}]
    result = run_p4_module(slot_map, {**BASE, "state": "present", "agents": agents})
    assert result["msg"] == "server id 0 out of range 1..254"
    assert fake_session.instances == []


def test_reconcile_result_and_errors(run_p4_module, fake_session, monkeypatch):
    from netmigrate import migration

    calls: list[dict[str, Any]] = []

    async def reconcile(switch: Any, keyspace: Any, agents: Any, *, check: bool) -> Any:
        calls.append({"keyspace": keyspace, "agents": agents, "check": check, "switch": switch})
        return migration.ReconcileResult(
            changed=True,
            slots_checked=4,
            diff={2: {"before": [0, 0], "after": [2, 0]}, 3: {"before": [0, 0], "after": [2, 0]}},
            slots_written=0,
            conflicts={7: "owned by servers [1, 2]"},
            message="would change 2 of 4 slots; 1 slots in conflict left untouched",
            slots_to_write=2,
        )

    monkeypatch.setattr(migration, "reconcile", reconcile)
    args = {**BASE, "state": "present", "agents": AGENTS}
    result = run_p4_module(slot_map, {**args, "_ansible_check_mode": True, "_ansible_diff": True})
    assert result["changed"] is True and result["changed_slots"] == 2
    assert result["changed_ranges"] == [
        {
            "first": 2,
            "last": 3,
            "before": {"owner": 0, "target": 0},
            "after": {"owner": 2, "target": 0},
        }
    ]
    assert result["reconcile"]["conflicts"] == {"7": "owned by servers [1, 2]"}
    assert result["diff"]["after"] == {"ranges": [{"first": 2, "last": 3, "owner": 2, "target": 0}]}
    (call,) = calls
    assert call["check"] is True and call["switch"] is fake_session.instances[0]
    assert [a.server_id for a in call["agents"]] == [1, 2]
    assert call["keyspace"] == migration.KeyspaceRef(1, "10.9.0.100", 5)

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise migration.MigrationError("agent 2 at h:7002: unreachable", code="UNAVAILABLE")

    monkeypatch.setattr(migration, "reconcile", failing)
    failed = run_p4_module(slot_map, args)
    assert failed["failed"] is True
    assert failed["msg"] == "reconcile: agent 2 at h:7002: unreachable"
    assert failed["grpc_code"] == "UNAVAILABLE"


def test_reconcile_reaches_the_agents_with_the_shared_tls_option(
    run_p4_module, fake_session, monkeypatch
):
    from netmigrate import migration

    seen: list[Any] = []

    async def reconcile(switch: Any, keyspace: Any, agents: Any, *, check: bool) -> Any:
        seen.extend(agents)
        return migration.ReconcileResult(False, 0, {}, 0, {}, "changed 0 of 0 slots")

    monkeypatch.setattr(migration, "reconcile", reconcile)
    tls = {"ca": "/etc/nm/ca.pem", "cert": "/etc/nm/c.pem", "key": "/etc/nm/c.key"}
    args = {**BASE, "state": "present", "agents": AGENTS, "control_tls": tls}
    result = run_p4_module(slot_map, args)
    assert result["changed"] is False and result["changed_ranges"] == []
    assert [(a.server_id, str(a.tls.ca), str(a.tls.key)) for a in seen] == [
        (1, "/etc/nm/ca.pem", "/etc/nm/c.key"),
        (2, "/etc/nm/ca.pem", "/etc/nm/c.key"),
    ]


def test_reconcile_counts_slots_whose_epoch_alone_is_restored(
    run_p4_module, fake_session, monkeypatch
):
    """After a switch restart reconcile may only raise epochs: no entry changes, yet slots
    are written, and the task says how many (it said 0 before)."""
    from netmigrate import migration

    async def reconcile(switch: Any, keyspace: Any, agents: Any, *, check: bool) -> Any:
        return migration.ReconcileResult(
            changed=True,
            slots_checked=16384,
            diff={},
            slots_written=0 if check else 3,
            conflicts={},
            message="would change 0 of 16384 slots; would restore the epochs of 3 slots",
            epochs_raised=3,
            slots_to_write=3,
        )

    monkeypatch.setattr(migration, "reconcile", reconcile)
    args = {**BASE, "state": "present", "agents": AGENTS}
    for check in (True, False):
        result = run_p4_module(slot_map, {**args, "_ansible_check_mode": check})
        assert result["changed"] is True and result["changed_slots"] == 3
        assert result["changed_ranges"] == []
        assert result["reconcile"]["epochs_raised"] == 3
        assert result["reconcile"]["slots_written"] == (0 if check else 3)
