"""The agent control channel's one builder: TLS options from file names, and no other module
of the package or the collection building a channel to an agent on its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netmigrate.agent.channel import CHANNEL_OPTIONS, MAX_MESSAGE, ControlTls, tls_from_files
from netmigrate.migration import ControlTls as MigrationControlTls

ROOT = Path(__file__).resolve().parents[2]


#: Bench code another change moves into the bench package; it still opens its own channel.
def test_tls_from_files_builds_paths_and_refuses_half_a_client_certificate() -> None:
    assert tls_from_files(None) is None and tls_from_files("") is None
    tls = tls_from_files("ca.pem", "c.pem", "k.pem", None)
    assert tls == ControlTls(Path("ca.pem"), Path("c.pem"), Path("k.pem"), "")
    assert tls_from_files("ca.pem", server_name="agent1").server_name == "agent1"
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        tls_from_files("ca.pem", "c.pem")
    with pytest.raises(ValueError, match="--c/--k need --a"):
        tls_from_files(None, key="k.pem", flags=("--a", "--c", "--k"))


def test_one_tls_record_for_agents_and_controller() -> None:
    assert MigrationControlTls is ControlTls
    assert dict(CHANNEL_OPTIONS)["grpc.max_receive_message_length"] == MAX_MESSAGE


def test_no_module_builds_an_agent_channel_of_its_own() -> None:
    """AgentControlStub and grpc channel constructors meet only in agent/channel.py."""
    stub = re.compile(r"control_pb2_grpc\.AgentControlStub|grpc(\.aio)?\.(insecure|secure)_channel")
    offenders = []
    for path in [*ROOT.glob("src/netmigrate/**/*.py"), *ROOT.glob("plugins/**/*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if "_generated" in rel or rel == "src/netmigrate/agent/channel.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "AgentControl" in text and stub.search(text):
            offenders.append(rel)
    assert offenders == []
