"""Unit tests of netmigrate.core.p4_table_entry: argument validation, check mode and diff
against a real lab switch, value formats, and the mapping of a failed Write batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import p4_table_entry

from netmigrate import p4rt
from netmigrate.p4rt import P4RTSession, PipelineConfig, install_pipeline, read_table_entries
from netmigrate.resources import p4info_path

ENTRY = {
    "table": "NetMigrateIngress.ipv4_lpm",
    "match": {"hdr.ipv4.dstAddr": "10.9.0.0/24"},
    "action": "NetMigrateIngress.ipv4_forward",
    "params": {"dst_mac": "02:00:00:00:09:01", "port": "3"},
}


def entry_count(address: str) -> int:
    async def count() -> int:
        async with P4RTSession(address, election_id=1) as s:
            return len(await read_table_entries(s))

    return asyncio.run(count())


@pytest.fixture
def ready_switch(lab_switch: str) -> str:
    async def install() -> None:
        async with P4RTSession(lab_switch, election_id=1) as s:
            await install_pipeline(s, PipelineConfig.load(p4info_path(), b"{}"))

    asyncio.run(install())
    return lab_switch


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"address": "a:1"}, "missing required arguments: entries"),
        ({"address": "a:1", "entries": [{"match": {}}]}, "missing required arguments: table"),
        ({"address": "a:1", "entries": [ENTRY], "state": "gone"}, "state must be one of"),
        (
            {"address": "a:1", "entries": [{**ENTRY, "priority": "high"}]},
            "priority",
        ),
    ],
)
def test_argument_spec_refuses_bad_input(run_p4_module, args: dict[str, Any], expected: str):
    result = run_p4_module(p4_table_entry, args)
    assert result["failed"] is True
    assert expected in result["msg"]


def test_check_mode_predicts_without_writing(run_p4_module, ready_switch: str):
    args = {"address": ready_switch, "entries": [ENTRY]}
    checked = run_p4_module(
        p4_table_entry, {**args, "_ansible_check_mode": True, "_ansible_diff": True}
    )
    assert checked["changed"] is True
    expected = {
        "table": "NetMigrateIngress.ipv4_lpm",
        "match": {"hdr.ipv4.dstAddr": [0x0A090000, 24]},
        "action": "NetMigrateIngress.ipv4_forward",
        "params": {"dst_mac": 0x020000000901, "port": 3},
    }
    assert checked["inserted"] == [expected]
    assert checked["diff"] == {"before": {"entries": []}, "after": {"entries": [expected]}}
    assert entry_count(ready_switch) == 0

    written = run_p4_module(p4_table_entry, args)
    assert written["changed"] is True and written["inserted"] == [expected]
    assert entry_count(ready_switch) == 1
    again = run_p4_module(p4_table_entry, args)
    assert again["changed"] is False and again["unchanged"] == 1 and again["inserted"] == []

    gone = run_p4_module(p4_table_entry, {**args, "state": "absent", "_ansible_check_mode": True})
    assert gone["changed"] is True and gone["deleted"] == [expected]
    assert entry_count(ready_switch) == 1


def test_bad_value_fails_before_writing(run_p4_module, ready_switch: str):
    bad = {**ENTRY, "params": {"dst_mac": "not-a-mac", "port": 1}}
    result = run_p4_module(p4_table_entry, {"address": ready_switch, "entries": [ENTRY, bad]})
    assert result["failed"] is True
    assert result["grpc_code"] == "INVALID_ARGUMENT"
    assert "table entry for NetMigrateIngress.ipv4_lpm" in result["msg"]
    assert entry_count(ready_switch) == 0


def test_switch_without_pipeline_fails_clearly(run_p4_module, lab_switch: str):
    result = run_p4_module(p4_table_entry, {"address": lab_switch, "entries": [ENTRY]})
    assert result["failed"] is True
    assert result["grpc_code"] == "FAILED_PRECONDITION"
    assert "no P4Info" in result["msg"]


def test_failed_write_reports_each_update(
    run_p4_module, fake_session, raising, monkeypatch: pytest.MonkeyPatch
):
    error = p4rt.WriteError(
        "batch failed",
        code="UNKNOWN",
        operation="Write",
        details=(p4rt.UpdateError(0, "ALREADY_EXISTS", "entry exists"),),
    )
    monkeypatch.setattr(p4rt, "ensure_table_entries", raising(error))
    result = run_p4_module(p4_table_entry, {"address": "sw:1", "entries": [ENTRY]})
    assert result["failed"] is True
    assert "Write: UNKNOWN: batch failed\n  update 0: ALREADY_EXISTS: entry exists" in result["msg"]
    assert result["update_errors"] == [
        {"index": 0, "code": "ALREADY_EXISTS", "message": "entry exists"}
    ]


def test_p4info_option_is_read_first(run_p4_module, fake_session, tmp_path):
    result = run_p4_module(
        p4_table_entry,
        {"address": "sw:1", "entries": [ENTRY], "p4info": str(tmp_path / "none.txtpb")},
    )
    assert result["msg"].startswith(f"cannot read p4info {tmp_path / 'none.txtpb'}")
    assert fake_session.instances == []
