"""The netmigrate.core.redis_node module in real playbooks against a real cluster-mode
redis-server: idempotence, check mode, and a refused password that changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from collection_helpers import Ansible

from netmigrate.bench.redis_server import RedisServer

AGENT_PASSWORD = "agent-pw-Playbook-1"
ADMIN_PASSWORD = "admin-pw-Playbook-2"


def playbook(ansible: Ansible, port: int, login_password: str | None = None) -> Path:
    args: dict[str, Any] = {
        "login_host": "127.0.0.1",
        "login_port": port,
        "cluster": "single_owner",
        "maxmemory": "64mb",
        "maxmemory_policy": "volatile-lru",
        "acl_user": {
            "name": "netmigrate-agent",
            "password": AGENT_PASSWORD,
            "rules": ["~*", "&*", "+@all", "-flushall"],
        },
    }
    if login_password:
        args["login_password"] = login_password
    return ansible.write(
        "redis_node.yml",
        [
            {
                "name": "Make a Redis a NetMigrate node",
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "tasks": [{"name": "Ensure the node", "netmigrate.core.redis_node": args}],
            }
        ],
    )


def assert_untouched(client: Any) -> None:
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.acl_users() == ["default"]
    assert client.cluster("INFO")["cluster_slots_assigned"] == "0"


def assert_no_secret(text: str) -> None:
    for secret in (AGENT_PASSWORD, ADMIN_PASSWORD, "wrong-pw-Playbook-3"):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text


@pytest.fixture
def client(redis_cluster_node: RedisServer) -> Any:
    import redis

    c = redis.Redis(port=redis_cluster_node.port, decode_responses=True)
    yield c
    c.close()


def test_second_run_changes_nothing(
    ansible: Ansible, redis_cluster_node: RedisServer, client: Any
) -> None:
    book = playbook(ansible, redis_cluster_node.port)

    first = ansible.playbook(book, "localhost,", "-v")
    assert first.returncode == 0, first.text()
    assert first.recap()["localhost"]["changed"] == 1
    assert client.cluster("INFO")["cluster_state"] == "ok"
    assert client.cluster("INFO")["cluster_slots_assigned"] == "16384"
    assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    assert sorted(client.acl_users()) == ["default", "netmigrate-agent"]
    assert_no_secret(first.text())

    second = ansible.playbook(book, "localhost,", "-v", "--diff")
    assert second.returncode == 0, second.text()
    assert second.recap()["localhost"]["changed"] == 0
    assert second.recap()["localhost"]["ok"] == 1
    assert_no_secret(second.text())

    checked = ansible.playbook(book, "localhost,", "--check", "--diff")
    assert checked.returncode == 0, checked.text()
    assert checked.recap()["localhost"]["changed"] == 0


def test_check_mode_changes_nothing(
    ansible: Ansible, redis_cluster_node: RedisServer, client: Any
) -> None:
    run = ansible.playbook(playbook(ansible, redis_cluster_node.port), "localhost,", "-C", "-D")

    assert run.returncode == 0, run.text()
    assert run.recap()["localhost"]["changed"] == 1
    # The diff shows the plan: all slots, the new memory policy, the user without password.
    assert '-    "slots_owned": 0' in run.stdout
    assert '+    "slots_owned": 16384' in run.stdout
    assert '+        "maxmemory-policy": "volatile-lru"' in run.stdout
    assert '+            "password": "matches",' in run.stdout
    assert_untouched(client)
    assert_no_secret(run.text())


def test_wrong_password_fails_clearly_and_changes_nothing(
    ansible: Ansible, redis_cluster_node: RedisServer, client: Any
) -> None:
    client.config_set("requirepass", ADMIN_PASSWORD)
    client.auth(ADMIN_PASSWORD)
    book = playbook(ansible, redis_cluster_node.port, login_password="wrong-pw-Playbook-3")

    run = ansible.playbook(book, "localhost,", "-vvv")

    assert run.returncode == 2, run.text()
    assert run.recap()["localhost"]["failed"] == 1
    expected = (
        f"Redis at 127.0.0.1:{redis_cluster_node.port} refused the login of user 'default': "
        "invalid username-password pair or user is disabled"
    )
    assert expected in run.stdout
    assert_untouched(client)
    assert_no_secret(run.text())

    # The same playbook with the right password goes through.
    fixed = ansible.playbook(
        playbook(ansible, redis_cluster_node.port, ADMIN_PASSWORD), "localhost,"
    )
    assert fixed.returncode == 0, fixed.text()
    assert fixed.recap()["localhost"]["changed"] == 1
