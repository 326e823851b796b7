"""The lab_switch role on the local lab with mutual TLS on P4Runtime, as on a switch host.

The local lab's switch serves plain text by default (a unix socket only root reaches); with
``lab_switch_tls`` it gets a server certificate of the P4Runtime CA made on the controller and
serves mutual TLS through ``netmigrate lab up --with-switch --switch-tls-*``: a client without a
certificate of that CA is refused, one with it gets in, the key is read by name and never shown.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from collection_helpers import Ansible, delete_netns
from support.p4rt_clients import p4runtime_opens

from netmigrate.p4rt import TlsOptions

pytestmark = pytest.mark.root

PREFIX = "nmtls"
HOSTS = ("client", "redis1")


def _teardown(run_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "lab", "down", "--prefix", PREFIX,
         "--hosts", ",".join(HOSTS), "--run-dir", str(run_dir)],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    for ns in (*(f"{PREFIX}-{h}" for h in HOSTS), f"{PREFIX}-sw"):
        if Path(f"/run/netns/{ns}").exists():
            delete_netns(ns)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / "run"
    _teardown(run)
    try:
        yield run
    finally:
        _teardown(run)


def _book(ansible: Ansible, run_dir: Path, pki: Path, state: str = "present") -> Path:
    return ansible.write(
        f"lab_switch_{state}.yml",
        [
            {
                "name": "The local lab's switch with mutual TLS",
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "vars": {
                    "lab_switch_state": state,
                    "lab_switch_prefix": PREFIX,
                    "lab_switch_hosts": list(HOSTS),
                    "lab_switch_run_dir": str(run_dir),
                    "lab_switch_grpc_addr": f"unix:{run_dir}/p4runtime.sock",
                    "lab_switch_tls": True,
                    "lab_switch_tls_pki_dir": str(pki),
                    "lab_switch_python": sys.executable,
                },
                "roles": ["netmigrate.core.lab_switch"],
                "tasks": [
                    {
                        "name": "A client certificate of the same CA",
                        "netmigrate.core.control_pki": {
                            "path": str(pki),
                            "ca_common_name": "NetMigrate P4Runtime CA",
                            "certificates": [{"name": "client", "usages": ["client"]}],
                        },
                        "when": state == "present",
                    }
                ],
            }
        ],
    )


def test_lab_switch_serves_mutual_tls(ansible: Ansible, run_dir: Path, tmp_path: Path) -> None:
    pki = tmp_path / "pki-p4runtime"
    book = _book(ansible, run_dir, pki)
    first = ansible.playbook(book, "localhost,")
    assert first.returncode == 0, first.text()[-4000:]
    assert first.totals()["changed"] > 0

    address = f"unix:{run_dir}/p4runtime.sock"
    client = TlsOptions(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    assert asyncio.run(p4runtime_opens(address, client))
    assert not asyncio.run(p4runtime_opens(address, None))
    assert not asyncio.run(p4runtime_opens(address, TlsOptions(ca=pki / "ca.pem")))

    key = pki / "switch-localhost.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key_line = key.read_text().splitlines()[1]
    assert key_line not in first.text()
    pid = int((run_dir / "switch.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert str(key) in cmdline and key_line not in cmdline

    again = ansible.playbook(book, "localhost,")
    assert again.returncode == 0, again.text()[-4000:]
    assert again.totals()["changed"] == 0, again.stdout[-4000:]
    assert int((run_dir / "switch.pid").read_text()) == pid

    down = ansible.playbook(_book(ansible, run_dir, pki, "absent"), "localhost,")
    assert down.returncode == 0, down.text()[-4000:]
    assert not (run_dir / "switch.pid").exists()
