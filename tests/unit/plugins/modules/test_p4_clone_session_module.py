"""Unit tests of netmigrate.core.p4_clone_session: argument validation, check mode against a
real lab switch and the mapping of a refused id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import p4_clone_session

from netmigrate.p4rt import P4RTSession, PipelineConfig, install_pipeline, read_clone_sessions
from netmigrate.resources import p4info_path


@pytest.fixture
def ready_switch(lab_switch: str) -> str:
    async def install() -> None:
        async with P4RTSession(lab_switch, election_id=1) as s:
            await install_pipeline(s, PipelineConfig.load(p4info_path(), b"{}"))

    asyncio.run(install())
    return lab_switch


def session_ids(address: str) -> list[int]:
    async def read() -> list[int]:
        async with P4RTSession(address, election_id=1) as s:
            return sorted(await read_clone_sessions(s))

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"address": "a:1"}, "missing required arguments: sessions"),
        ({"address": "a:1", "sessions": [{"replicas": []}]}, "session_id"),
        (
            {"address": "a:1", "sessions": [{"session_id": 1, "replicas": [{"instance": 1}]}]},
            "missing required arguments: port",
        ),
        ({"address": "a:1", "sessions": [{"session_id": 1}], "state": "x"}, "state must be"),
    ],
)
def test_argument_spec_refuses_bad_input(run_p4_module, args: dict[str, Any], expected: str):
    result = run_p4_module(p4_clone_session, args)
    assert result["failed"] is True
    assert expected in result["msg"]


def test_check_mode_then_write_then_idempotent(run_p4_module, ready_switch: str):
    args = {"address": ready_switch, "sessions": [{"session_id": 3, "replicas": [{"port": 3}]}]}
    checked = run_p4_module(
        p4_clone_session, {**args, "_ansible_check_mode": True, "_ansible_diff": True}
    )
    assert checked["changed"] is True and checked["inserted"] == [3]
    assert checked["diff"]["after"]["sessions"][0]["replicas"] == [[3, 0]]
    assert session_ids(ready_switch) == []
    assert run_p4_module(p4_clone_session, args)["inserted"] == [3]
    assert session_ids(ready_switch) == [3]
    assert run_p4_module(p4_clone_session, args)["changed"] is False


def test_session_id_zero_is_refused(run_p4_module, ready_switch: str):
    result = run_p4_module(
        p4_clone_session, {"address": ready_switch, "sessions": [{"session_id": 0}]}
    )
    assert result["failed"] is True
    assert result["grpc_code"] == "INVALID_ARGUMENT"
    assert "clone session ids start at 1" in result["msg"]
