"""The netmigrate.core.netns connection plugin, driven by the real ansible CLI into a real
network namespace."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from collection_helpers import Ansible, netns_inode


def test_adhoc_runs_inside_the_namespace(ansible: Ansible, netns: str) -> None:
    run = ansible.adhoc(
        "all",
        f"{netns},",
        "-c",
        "netmigrate.core.netns",
        "-m",
        "ansible.builtin.command",
        "-a",
        "readlink /proc/self/ns/net",
    )
    assert run.returncode == 0, run.text()
    assert f"net:[{netns_inode(netns)}]" in run.stdout
    assert os.readlink("/proc/self/ns/net") not in run.stdout


def test_playbook_tasks_run_inside_the_namespace(
    ansible: Ansible, netns: str, tmp_path: Path
) -> None:
    # The inventory name is an alias; netmigrate_netns names the namespace. copy/fetch exercise
    # put_file/fetch_file, the JSON facts file the module path (pipelining off and on).
    inventory = ansible.write(
        "inventory.yml",
        {
            "all": {
                "hosts": {
                    "lab-host": {
                        "ansible_connection": "netmigrate.core.netns",
                        "netmigrate_netns": netns,
                    }
                }
            }
        },
    )
    out = tmp_path / "out"
    out.mkdir()
    playbook = ansible.write(
        "play.yml",
        [
            {
                "name": "Work inside a lab host",
                "hosts": "lab-host",
                "gather_facts": False,
                "tasks": [
                    {
                        "name": "Read the interfaces and the network namespace",
                        "ansible.builtin.shell": "readlink /proc/self/ns/net; ip -o link show",
                        "register": "inside",
                        "changed_when": False,
                    },
                    {
                        "name": "Write what was seen (put_file)",
                        "ansible.builtin.copy": {
                            "content": "{{ inside.stdout_lines | to_json }}",
                            "dest": str(out / "seen.json"),
                            "mode": "0644",
                        },
                    },
                    {
                        "name": "Fetch it back (fetch_file)",
                        "ansible.builtin.fetch": {
                            "src": str(out / "seen.json"),
                            "dest": str(out / "fetched.json"),
                            "flat": True,
                        },
                    },
                ],
            }
        ],
    )
    for pipelining in ("false", "true"):
        (out / "seen.json").unlink(missing_ok=True)
        run = ansible.playbook(playbook, inventory, "-e", f"ansible_pipelining={pipelining}")
        assert run.returncode == 0, run.text()
        assert run.recap()["lab-host"]["failed"] == 0
        seen = json.loads((out / "fetched.json").read_text())
        assert seen[0] == f"net:[{netns_inode(netns)}]"
        # A fresh namespace has only its own loopback: none of the controller's interfaces.
        interfaces = [re.split(r":\s*", line)[1] for line in seen[1:]]
        assert interfaces == ["lo"]


def test_missing_namespace_is_unreachable(ansible: Ansible) -> None:
    run = ansible.adhoc("all", "nmt6-missing,", "-c", "netmigrate.core.netns", "-m", "ping")
    assert run.returncode == 4  # unreachable
    assert "network namespace 'nmt6-missing' does not exist" in run.text()
