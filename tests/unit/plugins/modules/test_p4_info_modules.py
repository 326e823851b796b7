"""Unit tests of the read-only modules netmigrate.core.p4_info and p4_register_info: facts from
a real lab switch, unknown names, and BMv2's UNIMPLEMENTED answer to RegisterEntry reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import p4_info, p4_register_info

from netmigrate import p4rt
from netmigrate.p4rt import P4RTSession, PipelineConfig, install_pipeline
from netmigrate.resources import p4info_path


@pytest.fixture
def ready_switch(lab_switch: str) -> tuple[str, int]:
    cfg = PipelineConfig.load(p4info_path(), b"{}")

    async def install() -> None:
        async with P4RTSession(lab_switch, election_id=1) as s:
            await install_pipeline(s, cfg)

    asyncio.run(install())
    return lab_switch, cfg.cookie


def test_p4_info_facts(run_p4_module, ready_switch: tuple[str, int]):
    address, cookie = ready_switch
    result = run_p4_module(
        p4_info,
        {
            "address": address,
            "counters": [{"name": "NetMigrateIngress.op_counter", "indices": [1, 2]}],
            "_ansible_check_mode": True,
        },
    )
    assert result["changed"] is False
    assert result["cookie"] == cookie
    names = [t["name"] for t in result["tables"]]
    assert "NetMigrateIngress.keyspace" in names and len(names) == 5
    assert all(t["entry_count"] == 0 and "entries" not in t for t in result["tables"])
    assert result["counters"] == {
        "NetMigrateIngress.op_counter": [
            {"index": 1, "packets": 0, "bytes": 0},
            {"index": 2, "packets": 0, "bytes": 0},
        ]
    }


def test_p4_info_unknown_counter(run_p4_module, ready_switch: tuple[str, int]):
    result = run_p4_module(p4_info, {"address": ready_switch[0], "counters": [{"name": "nope"}]})
    assert result["failed"] is True
    assert result["grpc_code"] == "NOT_FOUND"
    assert "not in the switch's P4Info: no P4Counter named 'nope'" in result["msg"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"address": "a:1"}, "missing required arguments: register"),
        (
            {"address": "a:1", "register": "slot_map", "keyspace": {"id": 1}},
            "missing required arguments: service_address, service_port",
        ),
    ],
)
def test_register_info_argument_spec(run_p4_module, args: dict[str, Any], expected: str):
    result = run_p4_module(p4_register_info, args)
    assert result["failed"] is True
    assert expected in result["msg"]


def test_register_info_reads_cells(run_p4_module, ready_switch: tuple[str, int]):
    result = run_p4_module(
        p4_register_info, {"address": ready_switch[0], "register": "slot_map", "indices": [7, 3]}
    )
    assert result["register"] == "NetMigrateIngress.slot_map"
    assert result["values"] == [{"index": 3, "value": 0}, {"index": 7, "value": 0}]


def test_register_info_unknown_register(run_p4_module, ready_switch: tuple[str, int]):
    result = run_p4_module(p4_register_info, {"address": ready_switch[0], "register": "nope"})
    assert result["failed"] is True
    assert "no such register in the switch's P4Info" in result["msg"]


def test_unimplemented_register_read_says_so(
    run_p4_module, lab_switch: str, raising, monkeypatch: pytest.MonkeyPatch
):
    # BMv2 answers RegisterEntry reads with UNIMPLEMENTED; the lab switch serves them, so the
    # read is replaced to answer like BMv2 (the session and schema are real).
    async def install() -> None:
        async with P4RTSession(lab_switch, election_id=1) as s:
            await install_pipeline(s, PipelineConfig.load(p4info_path(), b"{}"))

    asyncio.run(install())
    error = p4rt.P4RuntimeError("Register reads are not supported yet", code="UNIMPLEMENTED")
    monkeypatch.setattr(P4RTSession, "read", raising(error))
    result = run_p4_module(p4_register_info, {"address": lab_switch, "register": "slot_map"})
    assert result["failed"] is True
    assert result["grpc_code"] == "UNIMPLEMENTED"
    assert result["msg"] == (
        f"P4Runtime target {lab_switch} does not serve RegisterEntry reads: UNIMPLEMENTED: "
        "Register reads are not supported yet (give keyspace to read it through SLOT_READ)"
    )
