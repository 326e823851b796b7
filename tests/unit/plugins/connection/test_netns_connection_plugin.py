"""Unit tests of the netmigrate.core.netns connection plugin, on real network namespaces
(the tests run as root, like the rest of the suite)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nmt6-u{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def connection(**variables: Any) -> Any:
    conn = connection_loader.get("netmigrate.core.netns", PlayContext())
    conn.set_options(var_options=variables)
    return conn


@pytest.mark.parametrize("name", ["..", "a b", "x/y", ""])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(AnsibleConnectionFailure, match="invalid network namespace name"):
        connection(inventory_hostname=name)._connect()


def test_missing_namespace_is_unreachable() -> None:
    with pytest.raises(AnsibleConnectionFailure, match="'nmt6-missing' does not exist"):
        connection(inventory_hostname="nmt6-missing")._connect()


def test_name_precedence(netns: str) -> None:
    # inventory_hostname < ansible_host < netmigrate_netns
    assert connection(inventory_hostname="h1").get_option("netns") == "h1"
    assert connection(inventory_hostname="h1", ansible_host=netns).get_option("netns") == netns
    conn = connection(inventory_hostname="h1", ansible_host="h2", netmigrate_netns=netns)
    assert conn.get_option("netns") == netns


def test_commands_run_inside_the_namespace(netns: str) -> None:
    conn = connection(inventory_hostname="lab-host", netmigrate_netns=netns)
    rc, out, err = conn.exec_command("readlink /proc/self/ns/net; ip -o link show")
    conn.close()

    assert rc == 0, err
    lines = out.decode().splitlines()
    assert lines[0] == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]"
    assert lines[0] != os.readlink("/proc/self/ns/net")
    assert [line.split(":")[1].strip() for line in lines[1:]] == ["lo"]


def test_exit_status_stdin_and_stderr_pass_through(netns: str) -> None:
    conn = connection(inventory_hostname=netns)
    rc, out, err = conn.exec_command("cat; echo oops >&2; exit 3", in_data=b"piped")
    assert (rc, out, err) == (3, b"piped", b"oops\n")


def test_put_and_fetch_are_local_copies(netns: str, tmp_path: Path) -> None:
    conn = connection(inventory_hostname=netns)
    src = tmp_path / "src.txt"
    src.write_text("payload")
    conn.put_file(str(src), str(tmp_path / "put.txt"))
    conn.fetch_file(str(tmp_path / "put.txt"), str(tmp_path / "fetched.txt"))
    assert (tmp_path / "fetched.txt").read_text() == "payload"
    with pytest.raises(AnsibleFileNotFound):
        conn.put_file(str(tmp_path / "absent"), str(tmp_path / "x"))


def test_become_to_another_user_is_refused(netns: str) -> None:
    conn = connection(inventory_hostname=netns)
    become = become_loader.get("sudo")
    become.set_options(direct={"become_user": "nobody"})
    wrapped = become.build_become_command("true", conn._shell)
    conn.set_become_plugin(become)
    with pytest.raises(AnsibleConnectionFailure, match="does not support become to another user"):
        conn.exec_command(wrapped)
