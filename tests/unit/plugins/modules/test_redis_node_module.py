"""Unit tests of the netmigrate.core.redis_node module: argument handling, check mode, diff and
secrets, run in-process through the module's real entry point against a real redis-server."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.netmigrate.core.plugins.modules import redis_node

from netmigrate import redis_admin

PASSWORD = "agent-S3cret-pw"
DIGEST = hashlib.sha256(PASSWORD.encode()).hexdigest()


def run_module(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the module like Ansible does (args in, JSON on stdout, exit) and return its result."""
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        redis_node.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert (exited.value.code != 0) == bool(result.get("failed")), out
    result["_stdout"] = out
    return result


def node_args(server: Any, **extra: Any) -> dict[str, Any]:
    """Arguments that reach ``server`` and manage nothing but the cluster mode (unmanaged)."""
    return {"login_host": "127.0.0.1", "login_port": server.port, "cluster": "unmanaged", **extra}


def agent_user(password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return {"name": "netmigrate-agent", "password": password, **extra}


# ----------------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"acl_user": {"name": "agent"}}, "password"),
        ({"maxmemory_policy": "lru"}, "maxmemory_policy must be one of"),
        ({"cluster": "all"}, "cluster must be one of"),
        ({"login_host": "h", "login_unix_socket": "/s"}, "mutually exclusive"),
        ({"login_unix_socket": "/s", "tls": True}, "mutually exclusive"),
        ({"tls": True, "client_cert_file": "/c.pem"}, "parameters are required together"),
        ({"acl_user": {"name": "a", "password": "p", "state": "gone"}}, "state must be one of"),
    ],
)
def test_argument_spec_refuses_bad_input(
    args: dict[str, Any], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_module({"cluster": "unmanaged", **args}, capsys)
    assert result["failed"] is True
    assert expected in result["msg"]


def test_setting_given_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(
        {"cluster": "unmanaged", "maxmemory": "1mb", "config": {"maxmemory": "2mb"}}, capsys
    )
    assert result["failed"] is True
    assert "maxmemory is given both as option maxmemory and in config" in result["msg"]


def test_credential_setting_is_refused_and_masked(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module({"cluster": "unmanaged", "config": {"requirepass": "hunter2-xyz"}}, capsys)
    assert result["failed"] is True
    assert "holds a credential" in result["msg"]
    assert "hunter2-xyz" not in result["_stdout"]


def test_password_rule_is_refused_and_masked(capsys: pytest.CaptureFixture[str]) -> None:
    user = agent_user(rules=["~*", ">hunter2-xyz", "+@all"])
    result = run_module({"cluster": "unmanaged", "acl_user": user}, capsys)
    assert result["failed"] is True
    assert "managed by the password option" in result["msg"]
    assert "hunter2-xyz" not in result["_stdout"]
    assert PASSWORD not in result["_stdout"]


def test_removing_the_default_user_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(
        {"cluster": "unmanaged", "acl_user": {"name": "default", "state": "absent"}}, capsys
    )
    assert result["failed"] is True
    assert "'default' user" in result["msg"]


def test_unreachable_server_fails_clearly(
    unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {"login_host": "127.0.0.1", "login_port": unused_port, "maxmemory": "1mb"}
    result = run_module(args, capsys)
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith(f"cannot reach Redis at 127.0.0.1:{unused_port}")


# ----------------------------------------------------------------------- against a server


def test_wrong_password_fails_and_changes_nothing(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = redis_node_server.client()
    admin.config_set("requirepass", "right-pw-123")
    args = node_args(
        redis_node_server,
        login_password="wrong-pw-456",
        maxmemory="8mb",
        acl_user=agent_user(),
    )
    result = run_module(args, capsys)

    assert result["failed"] is True
    assert result["changed"] is False
    assert "refused the login of user 'default'" in result["msg"]
    assert "wrong-pw-456" not in result["_stdout"]
    assert PASSWORD not in result["_stdout"]
    authed = redis_node_server.client(password="right-pw-123")
    assert authed.config_get("maxmemory") == {"maxmemory": "0"}
    assert authed.execute_command("ACL", "GETUSER", "netmigrate-agent") is None


def test_check_mode_predicts_without_changing(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(
        redis_node_server,
        maxmemory="64mb",
        maxmemory_policy="volatile-lru",
        config={"appendonly": False, "hz": 10},
        acl_user=agent_user(),
    )
    predicted = run_module({**args, "_ansible_check_mode": True}, capsys)

    assert predicted["changed"] is True
    assert predicted["changed_settings"] == ["maxmemory", "maxmemory-policy"]
    assert predicted["settings"]["maxmemory"] == str(64 * 1024 * 1024)
    assert predicted["acl_user"] == {
        "name": "netmigrate-agent",
        "state": "present",
        "changed": True,
    }
    client = redis_node_server.client()
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.acl_users() == ["default"]  # and no probe user left behind

    applied = run_module(args, capsys)
    assert applied["changed"] is True
    assert applied["changed_settings"] == predicted["changed_settings"]
    assert applied["settings"] == predicted["settings"]
    assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    assert sorted(client.acl_users()) == ["default", "netmigrate-agent"]
    agent = redis_node_server.client(username="netmigrate-agent", password=PASSWORD)
    assert agent.ping() is True

    again = run_module({**args, "_ansible_check_mode": True}, capsys)
    assert again["changed"] is False
    assert run_module(args, capsys)["changed"] is False


def test_diff_shows_changes_but_no_password_material(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server, maxmemory="64mb", acl_user=agent_user(), _ansible_diff=True)
    result = run_module(args, capsys)

    before, after = result["diff"]["before"], result["diff"]["after"]
    assert before["settings"] == {"maxmemory": "0"}
    assert after["settings"] == {"maxmemory": str(64 * 1024 * 1024)}  # Redis: 1mb = 1024²
    assert before["acl_user"] == {"netmigrate-agent": None}
    assert after["acl_user"]["netmigrate-agent"]["password"] == "matches"
    assert after["acl_user"]["netmigrate-agent"]["commands"] == "+@all"
    assert PASSWORD not in result["_stdout"]
    assert DIGEST not in result["_stdout"]

    # A new password shows as a difference, still without the password or its digest.
    new_password = "another-S3cret-pw"
    changed = run_module({**args, "acl_user": agent_user(new_password)}, capsys)
    assert changed["changed"] is True, changed["_stdout"]
    assert changed["diff"]["before"]["acl_user"]["netmigrate-agent"]["password"] == "differs"
    for secret in (PASSWORD, new_password, hashlib.sha256(new_password.encode()).hexdigest()):
        assert secret not in changed["_stdout"]


def test_result_holds_no_secret_even_before_ansible_masks_it(redis_node_server: Any) -> None:
    """AnsibleModule masks no_log values in its output; the result itself must not need that."""
    args = node_args(redis_node_server, acl_user=agent_user(), _ansible_diff=True)
    with patch_module_args(args):
        module = AnsibleModule(argument_spec=redis_node.argument_spec(), supports_check_mode=True)
    spec = redis_node.node_spec(redis_admin, module.params)
    change = redis_admin.ensure_node(redis_node_server.client(), spec)
    result = redis_node.result_of(change, module.params, diff=True)

    text = json.dumps(result)
    assert result["acl_user"]["changed"] is True
    assert PASSWORD not in text
    assert DIGEST not in text


def test_acl_rules_are_compared_as_redis_normalises_them(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis stores "-@all +@read +get" as "-@all +@read" (+get is in @read) and reorders keys.
    args = node_args(redis_node_server, acl_user=agent_user(rules=["~app:*", "-@all", "+@read"]))
    assert run_module(args, capsys)["changed"] is True
    same = node_args(
        redis_node_server, acl_user=agent_user(rules=["~app:*", "-@all", "+@read", "+get"])
    )
    assert run_module(same, capsys)["changed"] is False
    wider = node_args(redis_node_server, acl_user=agent_user(rules=["~app:*", "+@all"]))
    assert run_module(wider, capsys)["changed"] is True


def test_acl_user_absent(redis_node_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run_module(node_args(redis_node_server, acl_user=agent_user()), capsys)
    gone = node_args(redis_node_server, acl_user={"name": "netmigrate-agent", "state": "absent"})

    assert run_module({**gone, "_ansible_check_mode": True}, capsys)["changed"] is True
    assert "netmigrate-agent" in redis_node_server.client().acl_users()
    assert run_module(gone, capsys)["changed"] is True
    assert redis_node_server.client().acl_users() == ["default"]
    assert run_module(gone, capsys)["changed"] is False


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"acl_user": agent_user(rules=["+nosuchcommand"])}, "rejected the ACL rules"),
        ({"config": {"no-such-setting": 1}}, "has no setting named 'no-such-setting'"),
        ({"config": {"hz": "fast"}}, "refused the settings"),
    ],
)
def test_bad_input_changes_nothing(
    redis_node_server: Any, extra: dict[str, Any], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server, maxmemory="8mb", **extra)
    result = run_module(args, capsys)

    assert result["failed"] is True
    assert expected in result["msg"]
    assert result["changed"] is False
    client = redis_node_server.client()
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    assert client.config_get("hz") == {"hz": "10"}
    assert client.acl_users() == ["default"]


def test_persist_rewrites_the_config_file(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server, maxmemory="16mb", persist=True, acl_user=agent_user())
    assert run_module(args, capsys)["changed"] is True
    text = redis_node_server.config_file.read_text()
    assert "maxmemory 16mb" in text or f"maxmemory {16 * 1024 * 1024}" in text
    assert "user netmigrate-agent on" in text
    assert PASSWORD not in text  # only the digest is written


def test_persist_saves_users_to_the_aclfile(
    redis_node_server_with_aclfile: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = redis_node_server_with_aclfile
    args = node_args(server, persist=True, acl_user=agent_user())
    assert run_module(args, capsys)["changed"] is True

    acl = (server.directory / "users.acl").read_text()
    assert "user netmigrate-agent on " in acl
    assert f"#{DIGEST}" in acl
    assert PASSWORD not in acl
    assert "user netmigrate-agent" not in server.config_file.read_text()  # ACL SAVE only


def test_persist_without_config_file_fails_before_changing(
    redis_node_server_without_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server_without_config, maxmemory="16mb", persist=True)
    result = run_module(args, capsys)

    assert result["failed"] is True
    assert "persist=true needs a Redis started with a config file" in result["msg"]
    client = redis_node_server_without_config.client()
    assert client.config_get("maxmemory") == {"maxmemory": "0"}


def test_facts(redis_node_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    client = redis_node_server.client()
    result = run_module(node_args(redis_node_server), capsys)

    assert result["changed"] is False
    node = result["node"]
    assert node["version"] == client.info("server")["redis_version"]
    assert node["cluster_enabled"] is True
    assert node["node_id"] == client.cluster("MYID")
    assert node["known_nodes"] == 1
    assert node["slots_owned"] == 0
    assert node["cluster_state"] == "fail"  # no slot served yet
    assert node["dbsize"] == 0
    assert node["maxmemory_policy"] == "noeviction"


# ----------------------------------------------------------------------- cluster mode


def test_single_owner_cluster_check_mode_then_apply(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server, cluster="single_owner", _ansible_diff=True)
    predicted = run_module({**args, "_ansible_check_mode": True}, capsys)

    assert predicted["changed"] is True
    assert predicted["slots_added"] == 16384
    assert predicted["diff"]["before"]["slots_owned"] == 0
    assert predicted["diff"]["after"]["slots_owned"] == 16384
    client = redis_node_server.client()
    assert client.cluster("INFO")["cluster_slots_assigned"] == "0"

    applied = run_module(args, capsys)
    assert applied["changed"] is True
    assert applied["slots_added"] == 16384
    assert applied["node"]["slots_owned"] == 16384
    assert client.cluster("INFO")["cluster_slots_assigned"] == "16384"

    again = run_module(args, capsys)
    assert again["changed"] is False
    assert again["slots_added"] == 0


def test_a_value_redis_normalises_to_the_current_one_is_no_change(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis stores enum settings in lower case: after CONFIG SET the value reads back the same,
    # so the run reports no change (check mode, which cannot ask, predicts one).
    redis_node_server.client().config_set("maxmemory-policy", "volatile-lru")
    args = node_args(redis_node_server, config={"maxmemory-policy": "VOLATILE-LRU"})
    result = run_module(args, capsys)

    assert result["changed"] is False
    assert result["changed_settings"] == []
    assert result["settings"] == {"maxmemory-policy": "volatile-lru"}


def test_an_eviction_policy_that_can_evict_the_agents_keys_is_refused(
    redis_node_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = node_args(redis_node_server, maxmemory_policy="allkeys-lru")
    result = run_module(args, capsys)

    assert result["failed"] is True
    assert "may evict any key, including the NetMigrate agent's own" in result["msg"]
    assert redis_node_server.client().config_get("maxmemory-policy") != {
        "maxmemory-policy": "allkeys-lru"
    }
