"""Unit tests of netmigrate.core.p4_pipeline: argument validation, file errors before any
connection, check mode (VERIFY) against a real lab switch, and the gRPC error mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_collections.netmigrate.core.plugins.modules import p4_pipeline

from netmigrate import p4rt
from netmigrate.resources import p4info_path

P4INFO = str(p4info_path())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"address": "a:1"}, "missing required arguments: p4info"),
        ({"p4info": P4INFO}, "missing required arguments: address"),
        ({"address": "a:1", "p4info": P4INFO, "state": "gone"}, "state must be one of"),
        (
            {"address": "a:1", "p4info": P4INFO, "client_cert": "/c.pem"},
            "parameters are required together: client_cert, client_key",
        ),
    ],
)
def test_argument_spec_refuses_bad_input(run_p4_module, args: dict[str, Any], expected: str):
    result = run_p4_module(p4_pipeline, args)
    assert result["failed"] is True
    assert expected in result["msg"]


def test_bad_files_fail_before_connecting(run_p4_module, fake_session, tmp_path: Path):
    missing = run_p4_module(p4_pipeline, {"address": "a:1", "p4info": str(tmp_path / "no")})
    assert missing["msg"].startswith(f"cannot read p4info {tmp_path / 'no'}: ")
    garbage = tmp_path / "garbage.txtpb"
    garbage.write_text("tables { this is not protobuf text")
    parsed = run_p4_module(p4_pipeline, {"address": "a:1", "p4info": str(garbage)})
    assert parsed["msg"].startswith(f"p4info {garbage} is not a P4Info in text format")
    no_config = run_p4_module(
        p4_pipeline, {"address": "a:1", "p4info": P4INFO, "device_config": str(tmp_path / "x")}
    )
    assert no_config["msg"].startswith(f"cannot read device_config {tmp_path / 'x'}")
    assert fake_session.instances == []


def test_check_mode_verifies_and_commits_nothing(run_p4_module, lab_switch: str):
    args = {"address": lab_switch, "p4info": P4INFO}
    checked = run_p4_module(
        p4_pipeline, {**args, "_ansible_check_mode": True, "_ansible_diff": True}
    )
    assert checked["changed"] is True
    assert checked["verified"] is True and checked["installed"] is False
    assert checked["previous_cookie"] is None
    assert checked["diff"] == {"before": {"cookie": None}, "after": {"cookie": checked["cookie"]}}
    again = run_p4_module(p4_pipeline, {**args, "_ansible_check_mode": True})
    assert again["changed"] is True and again["previous_cookie"] is None  # still not installed

    done = run_p4_module(p4_pipeline, args)
    assert done["changed"] is True and done["installed"] is True
    assert done["cookie"] == checked["cookie"]
    same = run_p4_module(p4_pipeline, {**args, "_ansible_check_mode": True})
    assert same["changed"] is False and same["previous_cookie"] == done["cookie"]
    forced = run_p4_module(p4_pipeline, {**args, "force": True, "_ansible_check_mode": True})
    assert forced["changed"] is True and forced["verified"] is True


def test_switch_refusal_is_reported_with_its_grpc_status(
    run_p4_module, fake_session, raising, monkeypatch: pytest.MonkeyPatch
):
    error = p4rt.PipelineMismatchError(
        "P4Info does not match: table size",
        code="INVALID_ARGUMENT",
        operation="SetForwardingPipelineConfig",
    )
    monkeypatch.setattr(p4rt, "install_pipeline", raising(error))
    result = run_p4_module(p4_pipeline, {"address": "sw:9559", "p4info": P4INFO})
    assert result["failed"] is True
    assert result["msg"] == (
        "P4Runtime target sw:9559: SetForwardingPipelineConfig: INVALID_ARGUMENT: "
        "P4Info does not match: table size"
    )
    assert result["grpc_code"] == "INVALID_ARGUMENT"
    assert result["grpc_message"] == "P4Info does not match: table size"
    assert result["operation"] == "SetForwardingPipelineConfig"
    assert fake_session.instances[0].closed is True


def test_verified_fails_on_another_cookie(
    run_p4_module, fake_session, raising, monkeypatch: pytest.MonkeyPatch
):
    async def cookie(session: Any) -> int:
        return 42

    monkeypatch.setattr(p4rt, "current_cookie", cookie)
    monkeypatch.setattr(p4rt, "install_pipeline", raising(AssertionError("must not install")))
    result = run_p4_module(p4_pipeline, {"address": "sw:1", "p4info": P4INFO, "state": "verified"})
    assert result["failed"] is True
    assert "does not run this pipeline: it has cookie 42" in result["msg"]
    assert result["previous_cookie"] == 42


def test_unreachable_switch_fails_clearly(run_p4_module, unused_port: int):
    result = run_p4_module(
        p4_pipeline, {"address": f"127.0.0.1:{unused_port}", "p4info": P4INFO, "timeout": 3}
    )
    assert result["failed"] is True
    assert result["grpc_code"] == "UNAVAILABLE"
    assert f"no P4Runtime server answers at 127.0.0.1:{unused_port}" in result["msg"]
