"""Unit tests of netmigrate.redis_admin, the library behind the redis_node module."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from netmigrate import redis_admin
from netmigrate.redis_admin import AclUserSpec, RedisAdminError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, "yes"),
        (False, "no"),
        (0, "0"),
        ("1k", "1000"),
        ("1kb", "1024"),
        ("1m", "1000000"),
        ("2MB", "2097152"),
        ("1g", "1000000000"),
        ("1gb", "1073741824"),
        ("allkeys-lru", "allkeys-lru"),
        ("normal 0 0 0 replica 256mb 64mb 60", "normal 0 0 0 replica 268435456 67108864 60"),
        ("3600 1 300 100", "3600 1 300 100"),
        ("/data/mb", "/data/mb"),
    ],
)
def test_normalize_setting(given: object, expected: str) -> None:
    assert redis_admin.normalize_setting(given) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max*": 1}, "give one exact name"),
        ({"": 1}, "give one exact name"),
        ({"masterauth": "x"}, "holds a credential"),
        ({"REQUIREPASS": "x"}, "holds a credential"),
        ({"maxmemory": None}, "needs a scalar value"),
        ({"save": ["3600", "1"]}, "needs a scalar value"),
        ({"maxmemory-policy": "allkeys-lru"}, "may evict any key, including the NetMigrate"),
        ({"maxmemory-policy": "ALLKEYS-LFU"}, "use noeviction"),
    ],
)
def test_check_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RedisAdminError, match=message):
        redis_admin.check_settings(settings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a b", "password": "p"}, "invalid ACL user name"),
        ({"name": "agent"}, "a password is required"),
        ({"name": "agent", "password": "p", "rules": ("nopass",)}, "managed by the password"),
        ({"name": "agent", "password": "p", "rules": ("#abc",)}, "managed by the password"),
        ({"name": "agent", "password": "p", "rules": ("off",)}, "managed by the password"),
        ({"name": "agent", "password": "p", "rules": ("+get +set",)}, "invalid rule"),
        ({"name": "default", "present": False}, "'default' user"),
    ],
)
def test_acl_user_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RedisAdminError, match=message):
        AclUserSpec(**kwargs)


def test_secret_rules_are_never_echoed() -> None:
    with pytest.raises(RedisAdminError) as refused:
        AclUserSpec("agent", password="p", rules=(">hunter2-xyz",))
    assert "hunter2-xyz" not in str(refused.value)
    assert redis_admin.is_secret_rule(">x") and redis_admin.is_secret_rule("#ab")
    assert not redis_admin.is_secret_rule("~*")


def test_spec_repr_hides_the_password() -> None:
    assert "pw-123" not in repr(AclUserSpec("agent", password="pw-123"))


def test_plan_and_apply_config(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    plan = redis_admin.plan_config(client, {"maxmemory": "2mb", "hz": 10, "appendonly": False})

    assert plan.before == {"maxmemory": "0", "hz": "10", "appendonly": "no"}
    assert plan.changes == {"maxmemory": "2097152"}
    assert client.config_get("maxmemory") == {"maxmemory": "0"}  # planning changes nothing
    assert redis_admin.apply_config(client, plan) == {
        "maxmemory": "2097152",
        "hz": "10",
        "appendonly": "no",
    }
    assert redis_admin.plan_config(client, {"maxmemory": "2mb"}).changes == {}


def test_apply_config_is_all_or_nothing(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    plan = redis_admin.plan_config(client, {"maxmemory": "2mb", "maxmemory-policy": "bogus"})
    with pytest.raises(RedisAdminError, match="Redis refused the settings"):
        redis_admin.apply_config(client, plan)
    assert client.config_get("maxmemory") == {"maxmemory": "0"}


def test_plan_and_apply_acl(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    spec = AclUserSpec("agent", password="pw-1", rules=("~k:*", "-@all", "+@read"))
    plan = redis_admin.plan_acl(client, spec)

    assert plan.changed is True
    assert plan.before is None
    assert plan.after is not None
    assert plan.after["keys"] == "~k:*"
    assert plan.after["commands"] == "-@all +@read"
    assert client.acl_users() == ["default"]  # the probe user is gone, the user not created
    redis_admin.apply_acl(client, plan)
    assert redis_admin.plan_acl(client, spec).changed is False

    agent = redis_node_server.client(username="agent", password="pw-1")
    assert agent.dbsize() == 0  # a @read command
    with pytest.raises(redis.exceptions.NoPermissionError):
        agent.execute_command("CONFIG", "SET", "hz", "11")  # not in @read

    removal = redis_admin.plan_acl(client, AclUserSpec("agent", present=False))
    assert removal.changed is True
    assert removal.before is not None
    assert removal.before["password"] == "set"
    redis_admin.apply_acl(client, removal)
    assert client.acl_users() == ["default"]


def test_gather_facts_counts_keys_and_slots(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 5
    while client.cluster("INFO")["cluster_state"] != "ok":  # updated by the cluster cron
        assert time.monotonic() < deadline, "cluster state did not become ok"
        time.sleep(0.01)
    client.set("{a}1", "x")  # a hash tag keeps keys in one slot; any slot is owned here
    client.set("{a}2", "y")
    facts = redis_admin.gather_facts(client)

    assert facts.slots_owned == 16384
    assert facts.dbsize == 2
    assert facts.known_nodes == 1
    assert facts.as_dict()["maxmemory"] == 0


def test_acl_rules_can_be_checked_when_redis_is_out_of_memory(redis_node_server: Any) -> None:
    # Above maxmemory (noeviction) Redis refuses to queue commands in MULTI; the ACL user must
    # still be manageable, and the probe user must still go away.
    client = redis_node_server.client()
    client.config_set("maxmemory", "1")
    spec = AclUserSpec("agent", password="pw-1", rules=("~*", "+@all"))
    plan = redis_admin.plan_acl(client, spec)

    assert plan.changed is True
    assert client.acl_users() == ["default"]
    redis_admin.apply_acl(client, plan)
    assert redis_admin.plan_acl(client, spec).changed is False


def test_ensure_node_plans_then_applies_and_diffs(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    spec = redis_admin.NodeSpec(
        settings={"maxmemory": "1mb"},
        acl_user=AclUserSpec(name="agent", present=True, password="pw-1", rules=("+@all", "~*")),
        single_owner=True,
    )
    applied: list[str] = []

    plan = redis_admin.ensure_node(client, spec, check=True, applied=applied)
    assert plan.changed and applied == []
    assert plan.changed_settings == ["maxmemory"] and plan.slots_added == 16384
    assert plan.after == plan.before and plan.before.slots_owned == 0
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    assert client.acl_users() == ["default"]

    done = redis_admin.ensure_node(client, spec, applied=applied)
    assert done.changed and applied == ["settings", "acl_user", "cluster"]
    assert done.after.slots_owned == 16384 and done.after.maxmemory == 1024 * 1024
    diff = done.diff()
    assert diff["before"]["settings"] == {"maxmemory": "0"}
    assert diff["after"]["settings"] == {"maxmemory": str(1024 * 1024)}
    assert (diff["before"]["slots_owned"], diff["after"]["slots_owned"]) == (0, 16384)
    assert diff["before"]["acl_user"] == {"agent": None}
    assert "pw-1" not in repr(diff)

    again = redis_admin.ensure_node(client, spec)
    assert not again.changed
    assert again.diff()["before"] == again.diff()["after"]


def test_ensure_node_refuses_before_any_change(redis_node_server: Any) -> None:
    client = redis_node_server.client()
    spec = redis_admin.NodeSpec(settings={"maxmemory": "1mb", "no-such-setting": 1})
    applied: list[str] = []
    with pytest.raises(RedisAdminError, match="no setting named 'no-such-setting'"):
        redis_admin.ensure_node(client, spec, applied=applied)
    assert applied == []
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
