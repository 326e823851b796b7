"""The bmv2_switch role's log file stays out of BMv2's per-packet trace logging.

``simple_switch_grpc --log-file F`` alone logs at level trace (every packet, traffic much
slower): the role must pass ``--log-level``. A stand-in binary on this machine (no BMv2 here)
records the command line the role starts and serves the P4Runtime port the role waits for.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from testbed_helpers import PlaybookRun, ansible_playbook, source_collections

STAND_IN = """\
#!{python}
import socket, sys
open({args!r}, "w").write("\\n".join(sys.argv[1:]))
port = int(sys.argv[sys.argv.index("--grpc-server-addr") + 1].rsplit(":", 1)[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
while True:
    s.accept()[0].close()
"""

PLAY = """\
- name: BMv2 with a log file
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: netmigrate.core.bmv2_switch
      bmv2_switch_state: "{{{{ state }}}}"
      bmv2_switch_supervisor: pidfile
      bmv2_switch_binary: {binary}
      bmv2_switch_interfaces: [{{port: 1, iface: lo}}]
      bmv2_switch_grpc_addr: 127.0.0.1:{port}
      bmv2_switch_cpu_port: 510
      bmv2_switch_run_dir: {run}
      bmv2_switch_log_dir: {run}
      bmv2_switch_config_dir: {run}/etc
      bmv2_switch_tls_pki_dir: {run}/pki
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_log_file_comes_with_a_log_level_below_per_packet(tmp_path: Path) -> None:
    args = tmp_path / "args"
    binary = tmp_path / "simple_switch_grpc"
    binary.write_text(STAND_IN.format(python=sys.executable, args=str(args)))
    binary.chmod(0o755)
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(binary=binary, port=_free_port(), run=tmp_path / "run"))
    collections = source_collections(tmp_path / "collections")
    inventory = tmp_path / "hosts"
    inventory.write_text("localhost ansible_python_interpreter=" + sys.executable + "\n")

    def role(state: str) -> PlaybookRun:
        run = ansible_playbook(play, inventory, collections, tmp_path, "-e", f"state={state}")
        assert run.returncode == 0, run.output[-4000:]
        return run

    try:
        role("present")
        argv = args.read_text().splitlines()
    finally:
        role("absent")
    target = argv[: argv.index("--")]
    assert "--log-file" in target
    level = target[target.index("--log-level") + 1]
    assert level not in ("trace", "debug"), target


UNIX_STAND_IN = """\
#!{python}
import os, socket, sys
open({args!r}, "w").write("\\n".join(sys.argv[1:]))
path = sys.argv[sys.argv.index("--grpc-server-addr") + 1].removeprefix("unix:")
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
while True:
    s.accept()[0].close()
"""

NETNS_PLAY = """\
- name: BMv2 in a namespace, as in the local lab
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: netmigrate.core.bmv2_switch
      bmv2_switch_state: "{{{{ state }}}}"
      bmv2_switch_supervisor: pidfile
      bmv2_switch_binary: {binary}
      bmv2_switch_netns: {netns}
      bmv2_switch_interfaces: [{{port: 1, iface: lo}}]
      bmv2_switch_grpc_addr: unix:{run}/p4runtime.sock
      bmv2_switch_cpu_port: 510
      bmv2_switch_run_dir: {run}
      bmv2_switch_log_dir: {run}
      bmv2_switch_config_dir: {run}/etc
      bmv2_switch_tls_pki_dir: {run}/pki
"""
NETNS = "nmtbr-bmv2"


@pytest.mark.root
def test_tls_by_default_idempotent_and_renewed_material_restarts(tmp_path: Path) -> None:
    args = tmp_path / "args"
    binary = tmp_path / "simple_switch_grpc"
    binary.write_text(UNIX_STAND_IN.format(python=sys.executable, args=str(args)))
    binary.chmod(0o755)
    play = tmp_path / "play.yml"
    run_dir = tmp_path / "run"
    play.write_text(NETNS_PLAY.format(binary=binary, netns=NETNS, run=run_dir))
    collections = source_collections(tmp_path / "collections")
    inventory = tmp_path / "hosts"
    inventory.write_text("localhost ansible_python_interpreter=" + sys.executable + "\n")
    pid_file = run_dir / "bmv2-netmigrate.pid"

    def role(state: str) -> PlaybookRun:
        run = ansible_playbook(play, inventory, collections, tmp_path, "-e", f"state={state}")
        assert run.returncode == 0, run.output[-4000:]
        return run

    subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        first = role("present")
        rest = args.read_text().splitlines()
        rest = rest[rest.index("--") + 1 :]
        # Mutual TLS with the role's files, by name: no key on the command line.
        assert "--grpc-server-ssl" in rest and "--grpc-server-with-client-auth" in rest
        key = Path(rest[rest.index("--grpc-server-key") + 1])
        ca = Path(rest[rest.index("--grpc-server-cacert") + 1])
        assert key.parent == ca.parent == run_dir / "etc"
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_text().splitlines()[1] not in first.output
        assert ca.read_text() == (run_dir / "pki" / "ca.pem").read_text()
        pid = pid_file.read_text()

        assert role("present").totals()["changed"] == 0
        assert pid_file.read_text() == pid

        # A renewed certificate (same file names) reaches BMv2 only through a restart.
        (run_dir / "pki" / "switch-localhost.pem").unlink()
        assert role("present").totals()["changed"] > 0
        assert pid_file.read_text() != pid
    finally:
        role("absent")
        subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    assert not key.exists() and not ca.exists() and not pid_file.exists()
