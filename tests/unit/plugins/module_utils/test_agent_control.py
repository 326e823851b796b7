"""The collection's agent endpoints: TLS options become the package's one ControlTls, with
paths as Path objects (Ansible hands ``type=path`` options over as strings)."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.netmigrate.core.plugins.module_utils._agent_control import (
    agent_endpoint,
)

import netmigrate.migration as mig
from netmigrate.agent.channel import ControlTls, credentials


def test_endpoint_tls_is_the_channel_record_with_paths(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    tls = {
        "ca": str(tmp_path / "ca.pem"),
        "cert": str(tmp_path / "c.pem"),
        "key": str(tmp_path / "k.pem"),
        "server_name": "agent1",
    }
    ep = agent_endpoint(mig, {"server_id": 1, "control": "127.0.0.1:7000"}, tls)
    assert ep.tls == ControlTls(
        tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem", "agent1"
    )
    assert isinstance(ep.tls.ca, Path)
    credentials(ep.tls)  # the files are read as the channel reads them
    bare = agent_endpoint(mig, {"server_id": 2, "control": "h:1", "data": None}, None)
    assert bare.tls is None and bare.data == ""
