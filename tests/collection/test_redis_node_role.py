"""The netmigrate.core.redis_node role, applied with the netns connection to a lab host (a real
network namespace) in pidfile mode: provision twice (second run changes nothing), restart on a
changed configuration, then remove everything it made."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from collection_helpers import Ansible, AnsibleRun, netns_inode, redis_cli

ADMIN_PASSWORD = "admin-pw-Role-1"
AGENT_PASSWORD = "agent-pw-Role-2"


def role_play(ansible: Ansible, netns: str, base: Path, **overrides: Any) -> tuple[Path, Path]:
    """Inventory and playbook that apply the role to one lab host (files under ``base``)."""
    inventory = ansible.write(
        "inventory.yml",
        {
            "all": {
                "hosts": {
                    "lab-redis": {
                        "ansible_connection": "netmigrate.core.netns",
                        "netmigrate_netns": netns,
                        # One `ip netns exec` per task instead of four (no temp files).
                        "ansible_pipelining": True,
                    }
                }
            }
        },
    )
    role_vars = {
        "redis_node_supervisor": "pidfile",
        "redis_node_name": "r1",
        "redis_node_port": 6379,  # the namespace has its own port space
        "redis_node_config_dir": str(base / "etc"),
        "redis_node_data_dir": str(base / "data"),
        "redis_node_run_dir": str(base / "run"),
        "redis_node_log_dir": str(base / "log"),
        "redis_node_password": ADMIN_PASSWORD,
        "redis_node_agent_password": AGENT_PASSWORD,
        "redis_node_maxmemory": "64mb",
        "redis_node_maxmemory_policy": "volatile-lru",
        "redis_node_config": {"appendonly": False, "save": ""},
        "redis_node_purge_data": True,
        **overrides,
    }
    playbook = ansible.write(
        "site.yml",
        [
            {
                "name": "Provision a NetMigrate Redis node in a lab namespace",
                "hosts": "lab-redis",
                "gather_facts": False,
                "roles": [{"role": "netmigrate.core.redis_node", "vars": role_vars}],
            }
        ],
    )
    return inventory, playbook


def apply(ansible: Ansible, netns: str, base: Path, **overrides: Any) -> AnsibleRun:
    inventory, playbook = role_play(ansible, netns, base, **overrides)
    run = ansible.playbook(playbook, inventory, "--diff")
    assert run.returncode == 0, run.text()
    assert run.recap()["lab-redis"]["failed"] == 0
    for secret in (ADMIN_PASSWORD, AGENT_PASSWORD):
        assert secret not in run.text()
        assert hashlib.sha256(secret.encode()).hexdigest() not in run.text()
    return run


def running_pid(base: Path) -> int:
    """The pid in the node's pid file, checked to be a live redis-server."""
    pid = int((base / "run" / "redis-r1.pid").read_text())
    assert Path(f"/proc/{pid}/comm").read_text().startswith("redis-server")
    assert not _is_zombie(pid)
    return pid


def test_role_provisions_idempotently_restarts_and_removes(
    ansible: Ansible, netns: str, tmp_path: Path
) -> None:
    base = tmp_path / "node"

    first = apply(ansible, netns, base)
    assert first.recap()["lab-redis"]["changed"] >= 4  # dirs, ACL file, config, start, module

    pid = running_pid(base)
    # The server runs inside the lab host's namespace, not in the controller's.
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns_inode(netns)
    info = redis_cli(
        netns, 6379, "cluster", "info", user="netmigrate-agent", password=AGENT_PASSWORD
    )
    assert "cluster_state:ok" in info
    assert "cluster_slots_assigned:16384" in info
    policy = redis_cli(
        netns, 6379, "config", "get", "maxmemory-policy", user="default", password=ADMIN_PASSWORD
    )
    assert policy.split() == ["maxmemory-policy", "volatile-lru"]
    acl_text = (base / "etc" / "redis-r1.acl").read_text()
    assert AGENT_PASSWORD not in acl_text and ADMIN_PASSWORD not in acl_text
    assert hashlib.sha256(AGENT_PASSWORD.encode()).hexdigest() in acl_text
    # The role's own admin user: its password generated on the host, private, never shown.
    admin_file = base / "etc" / "redis-r1.admin-password"
    assert admin_file.stat().st_mode & 0o777 == 0o600
    admin_password = admin_file.read_text().strip()
    assert len(admin_password) >= 32 and admin_password not in first.text()
    assert admin_password not in acl_text
    whoami = redis_cli(
        netns, 6379, "acl", "whoami", user="netmigrate-admin", password=admin_password
    )
    assert whoami.strip() == "netmigrate-admin"
    # The agent's user can do nothing administrative.
    refused = redis_cli(
        netns, 6379, "config", "get", "maxmemory", user="netmigrate-agent", password=AGENT_PASSWORD
    )
    assert "NOPERM" in refused

    second = apply(ansible, netns, base)
    assert second.recap()["lab-redis"]["changed"] == 0
    assert running_pid(base) == pid

    # A changed setting rewrites the config and restarts the server (new pid), once. (The
    # package step, proven idempotent above, is skipped from here on: apt is slow.)
    third = apply(ansible, netns, base, redis_node_maxmemory="32mb", redis_node_install=False)
    assert third.recap()["lab-redis"]["changed"] >= 1
    restarted = running_pid(base)
    assert restarted != pid
    maxmemory = redis_cli(
        netns, 6379, "config", "get", "maxmemory", user="default", password=ADMIN_PASSWORD
    )
    assert maxmemory.split() == ["maxmemory", str(32 * 1024 * 1024)]
    # Slot ownership survived the restart (nodes.conf in the data dir).
    info = redis_cli(
        netns, 6379, "cluster", "info", user="netmigrate-agent", password=AGENT_PASSWORD
    )
    assert "cluster_slots_assigned:16384" in info
    fourth = apply(ansible, netns, base, redis_node_maxmemory="32mb", redis_node_install=False)
    assert fourth.recap()["lab-redis"]["changed"] == 0
    assert running_pid(base) == restarted

    removed = apply(ansible, netns, base, redis_node_state="absent")
    assert removed.recap()["lab-redis"]["changed"] >= 2
    assert not Path(f"/proc/{restarted}/ns").exists() or _is_zombie(restarted)
    leftovers = ("etc/redis-r1.conf", "etc/redis-r1.acl", "etc/redis-r1.admin-password")
    for leftover in (*leftovers, "run/redis-r1.pid", "data"):
        assert not (base / leftover).exists(), leftover
    again = apply(ansible, netns, base, redis_node_state="absent")
    assert again.recap()["lab-redis"]["changed"] == 0


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_role_refuses_an_eviction_policy_that_can_evict_the_agents_keys(
    ansible: Ansible, netns: str, tmp_path: Path
) -> None:
    base = tmp_path / "node"
    inventory, playbook = role_play(ansible, netns, base, redis_node_maxmemory_policy="allkeys-lru")
    run = ansible.playbook(playbook, inventory)
    assert run.returncode != 0
    assert "may evict any key, including the NetMigrate agent's own" in run.text()
    assert not (base / "etc").exists()  # refused before anything was written
