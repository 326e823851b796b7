"""scripts/gen_protos.py: stubs up to date, imports made package-relative."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_protos.py"


def _load():
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_up_to_date() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, f"run scripts/gen_protos.py: {out.stderr}"
    from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc

    assert control_pb2.DESCRIPTOR.package == "netmigrate.agent.v1"
    assert {m.name for m in control_pb2.DESCRIPTOR.services_by_name["AgentControl"].methods} >= {
        "GetStats",
        "GetSlots",
    }
    source = Path(control_pb2_grpc.__file__).read_text()
    assert "from . import control_pb2 as" in source
    assert "from netmigrate.agent" not in source


def test_import_rewriting() -> None:
    gen = _load()
    assert gen.target_module("netmigrate.agent.v1.control_pb2") == "agent.v1.control_pb2"
    assert gen.relative_import("agent.v1.control_pb2_grpc", "agent.v1.control_pb2") == (
        ".",
        "control_pb2",
    )
    assert gen.relative_import("agent.v1.x_pb2", "common.v1.types_pb2") == (
        "...common.v1",
        "types_pb2",
    )
    generated = {"netmigrate.common.v1.types_pb2", "netmigrate.agent.v1.control_pb2"}
    text = (
        "from google.protobuf import descriptor as _descriptor\n"
        "from netmigrate.common.v1 import types_pb2 as netmigrate_dot_common_dot_v1\n"
    )
    out = gen.rewrite_imports(text, "agent.v1.control_pb2", generated)
    assert "from google.protobuf import descriptor as _descriptor" in out
    assert "from ...common.v1 import types_pb2 as netmigrate_dot_common" in out
