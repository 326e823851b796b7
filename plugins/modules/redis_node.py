#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: redis_node
short_description: Ensure the runtime configuration of a Redis instance for NetMigrate
version_added: 0.1.0
description:
  - Makes a running Redis instance a NetMigrate node and reports facts about it.
  - With O(cluster=single_owner) the instance becomes a one-node Redis Cluster that owns all
    16384 slots; NetMigrate's agent and switch move slots between such nodes.
  - Ensures one ACL user (for the NetMigrate agent), compared with C(ACL GETUSER) so that an
    unchanged user is not reported as a change. The password is set as its SHA-256 digest and
    never appears in results, diffs or logs.
  - Ensures settings that C(CONFIG SET) accepts, for example C(maxmemory) and
    C(maxmemory-policy), all in one atomic C(CONFIG SET).
  - Everything is planned and validated against the server before the first change, so bad
    input or a refused login fails the task with nothing changed.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._redis
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the changes the same run without check mode would make, without making them.
  diff_mode:
    support: full
    details: Shows settings, the ACL user (without its password) and the owned slot count.
  platform:
    platforms: posix
options:
  cluster:
    description:
      - V(single_owner) makes the instance a Redis Cluster of one node that owns every slot.
        The instance must run with C(cluster-enabled yes) and must not know other nodes.
      - V(unmanaged) leaves cluster state as it is (the facts still report it).
    type: str
    choices: [single_owner, unmanaged]
    default: single_owner
  maxmemory:
    description:
      - Memory limit, as C(redis.conf) accepts it (V(0) for none, V(256mb), V(1gb)).
      - Same as a C(maxmemory) key in O(config); give it in one place only.
    type: str
  maxmemory_policy:
    description:
      - Eviction policy when O(maxmemory) is reached.
    type: str
    choices:
      - noeviction
      - allkeys-lru
      - allkeys-lfu
      - allkeys-random
      - volatile-lru
      - volatile-lfu
      - volatile-random
      - volatile-ttl
  config:
    description:
      - Other settings that C(CONFIG SET) accepts, by their C(redis.conf) name.
      - Values are compared with C(CONFIG GET) after normalising booleans to C(yes)/C(no)
        and memory sizes (V(64mb)) to bytes; give other values as C(CONFIG GET) prints them.
      - Settings that hold credentials (C(requirepass), C(masterauth), ...) are refused because
        the values of this dict are logged; use O(acl_user) for passwords.
    type: dict
    default: {}
  acl_user:
    description:
      - An ACL user to ensure, typically the one the NetMigrate agent logs in with.
    type: dict
    suboptions:
      name:
        description:
          - User name.
        type: str
        required: true
      state:
        description:
          - V(present) creates or updates the user, V(absent) deletes it.
        type: str
        choices: [present, absent]
        default: present
      password:
        description:
          - The user's only password. Required with O(acl_user.state=present).
        type: str
      rules:
        description:
          - ACL rules besides the password, applied after C(reset on), for example
            V(~*), V(&*), V(+@all) or V(-@all), V(+@read).
          - Password and on/off rules (V(>...), V(#...), V(nopass), V(off), ...) are refused,
            because the password comes from O(acl_user.password) and the user is always enabled.
        type: list
        elements: str
        default: ['~*', '&*', '+@all']
  persist:
    description:
      - Also write applied changes to disk so they survive a restart, with C(ACL SAVE) when the
        server uses an C(aclfile) and C(CONFIG REWRITE) otherwise. The server must run with
        a config file.
      - Leave it V(false) when the config file is a template (as in the
        P(netmigrate.core.redis_node#role) role), so a rewrite does not make the template task
        report a change.
      - Slot ownership is always persistent (Redis Cluster keeps it in its nodes file).
    type: bool
    default: false
notes:
  - To compare ACL rules the way the server normalises them, the module lets Redis parse the
    wanted rules for a temporary user inside one C(MULTI)/C(EXEC) transaction (created, read
    and deleted atomically, never visible to other clients), also in check mode.
  - Requires the C(netmigrate) Python package on the managed host.
seealso:
  - name: Redis ACL
    description: ACL rules and C(ACL SETUSER).
    link: https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/
"""

EXAMPLES = r"""
- name: Make the local Redis a NetMigrate node with an agent user and an LRU memory limit
  netmigrate.core.redis_node:
    login_port: 7001
    login_password: "{{ redis_admin_password }}"
    cluster: single_owner
    maxmemory: 256mb
    maxmemory_policy: volatile-lru
    config:
      appendonly: true
    acl_user:
      name: netmigrate-agent
      password: "{{ agent_password }}"
      rules: ['~*', '&*', '+@all', '-@dangerous', '+cluster', '+migrate']
  register: node

- name: Show what the node owns
  ansible.builtin.debug:
    msg: "{{ node.node.slots_owned }} slots, {{ node.node.dbsize }} keys"

- name: Only read the facts
  netmigrate.core.redis_node:
    login_unix_socket: /run/redis/redis.sock
    cluster: unmanaged

- name: Remove the agent user
  netmigrate.core.redis_node:
    login_password: "{{ redis_admin_password }}"
    cluster: unmanaged
    acl_user:
      name: netmigrate-agent
      state: absent
"""

RETURN = r"""
node:
  description: Facts about the instance after the run (before it, in check mode).
  returned: success
  type: dict
  contains:
    version:
      description: Redis server version.
      type: str
      sample: 7.0.15
    cluster_enabled:
      description: Whether the instance runs in cluster mode.
      type: bool
      sample: true
    cluster_state:
      description: C(CLUSTER INFO) state, V(ok) once all slots are served; null without cluster.
      type: str
      sample: ok
    node_id:
      description: Cluster node id; null without cluster mode.
      type: str
      sample: 4d0d6cc5be7e2f6d0decc8fac908970f8be590bf
    known_nodes:
      description: Nodes the instance knows, itself included (0 without cluster mode).
      type: int
      sample: 1
    slots_owned:
      description: Hash slots the instance owns.
      type: int
      sample: 16384
    dbsize:
      description: Number of keys.
      type: int
      sample: 1000
    used_memory:
      description: Bytes used by the data set and overhead.
      type: int
      sample: 1762064
    maxmemory:
      description: Memory limit in bytes, 0 for none.
      type: int
      sample: 268435456
    maxmemory_policy:
      description: Eviction policy.
      type: str
      sample: allkeys-lru
settings:
  description:
    - The requested settings (O(maxmemory), O(maxmemory_policy), O(config)) as C(CONFIG GET)
      reports them after the run (in check mode, as they would be).
  returned: success
  type: dict
  sample: {"maxmemory": "268435456", "maxmemory-policy": "allkeys-lru"}
changed_settings:
  description: Names of the settings that were (in check mode, would be) changed.
  returned: success
  type: list
  elements: str
  sample: ["maxmemory"]
acl_user:
  description: The ensured ACL user, without any password material.
  returned: when O(acl_user) is given
  type: dict
  contains:
    name:
      description: User name.
      type: str
      sample: netmigrate-agent
    state:
      description: V(present) or V(absent).
      type: str
      sample: present
    changed:
      description: Whether the user was (in check mode, would be) created, updated or deleted.
      type: bool
      sample: false
slots_added:
  description: Number of slots that were (in check mode, would be) assigned to the node.
  returned: success
  type: int
  sample: 16384
applied:
  description:
    - When a change fails half-way, the parts already applied (V(settings), V(acl_user),
      V(cluster)); validation and planning errors happen before any change.
  returned: failure after a change
  type: list
  elements: str
  sample: ["settings"]
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    fail_imports,
    optional_import,
)
from ansible_collections.netmigrate.core.plugins.module_utils._redis import (
    REDIS_MUTUALLY_EXCLUSIVE,
    REDIS_REQUIRED_TOGETHER,
    connect_or_fail,
    describe_target,
    redis_argument_spec,
)

_MAXMEMORY_POLICIES = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


def argument_spec() -> dict[str, t.Any]:
    spec = redis_argument_spec()
    spec.update(
        cluster=dict(type="str", choices=["single_owner", "unmanaged"], default="single_owner"),
        maxmemory=dict(type="str"),
        maxmemory_policy=dict(type="str", choices=_MAXMEMORY_POLICIES),
        config=dict(type="dict", default={}),
        acl_user=dict(
            type="dict",
            options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"], default="present"),
                password=dict(type="str", no_log=True),
                rules=dict(type="list", elements="str", default=["~*", "&*", "+@all"]),
            ),
            required_if=[("state", "present", ("password",))],
        ),
        persist=dict(type="bool", default=False),
    )
    return spec


def wanted_settings(params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``config`` plus the dedicated options, each setting given once."""
    settings = dict(params["config"])
    for option, name in (("maxmemory", "maxmemory"), ("maxmemory_policy", "maxmemory-policy")):
        if params[option] is not None:
            if name in settings:
                raise ValueError(f"{name} is given both as option {option} and in config")
            settings[name] = params[option]
    return settings


def acl_spec(admin: t.Any, params: t.Mapping[str, t.Any]) -> t.Any:
    """The wanted ACL user (validated: name, rules), or None."""
    user = params["acl_user"]
    if not user:
        return None
    return admin.AclUserSpec(
        name=user["name"],
        present=user["state"] == "present",
        password=user["password"],
        rules=tuple(user["rules"]),
    )


def mask_misplaced_secrets(module: AnsibleModule, admin: t.Any) -> None:
    """Secrets put where they do not belong (the config dict, the rule list) are refused; make
    sure the refusal does not log them either, by masking them like no_log values."""
    for name, value in module.params["config"].items():
        if str(name).lower() in admin.SECRET_SETTINGS and value is not None:
            module.no_log_values.add(str(value))
    if module.params["acl_user"]:
        for rule in module.params["acl_user"]["rules"]:
            if admin.is_secret_rule(rule):
                module.no_log_values.add(rule)


def node_spec(admin: t.Any, params: t.Mapping[str, t.Any]) -> t.Any:
    """The wanted node (``netmigrate.redis_admin.NodeSpec``); ValueError / RedisAdminError on
    bad input, before any connection."""
    settings = wanted_settings(params)
    admin.check_settings(settings)
    return admin.NodeSpec(
        settings=settings,
        acl_user=acl_spec(admin, params),
        single_owner=params["cluster"] == "single_owner",
        persist=params["persist"],
    )


def result_of(change: t.Any, params: t.Mapping[str, t.Any], diff: bool) -> dict[str, t.Any]:
    result: dict[str, t.Any] = dict(
        changed=change.changed,
        node=change.after.as_dict(),
        settings=change.settings_after,
        changed_settings=change.changed_settings,
        slots_added=change.slots_added,
    )
    if change.acl:
        result["acl_user"] = dict(
            name=change.acl.name, state=params["acl_user"]["state"], changed=change.acl.changed
        )
    if diff:
        result["diff"] = change.diff()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=REDIS_MUTUALLY_EXCLUSIVE,
        required_together=REDIS_REQUIRED_TOGETHER,
    )
    fail_imports(module, "redis", "netmigrate.redis_admin")
    redis = optional_import("redis")
    admin = optional_import("netmigrate.redis_admin")
    errors = (admin.RedisAdminError, redis.RedisError, admin.RedisNodeError)

    # Input errors fail the same way whether or not the server is reachable.
    mask_misplaced_secrets(module, admin)
    try:
        spec = node_spec(admin, module.params)
    except (ValueError, admin.RedisAdminError) as exc:
        module.fail_json(msg=str(exc))

    client = connect_or_fail(module)
    applied: list[str] = []
    try:
        change = admin.ensure_node(client, spec, check=module.check_mode, applied=applied)
    except errors as exc:
        msg = str(exc)
        if isinstance(exc, redis.RedisError):
            msg = f"Redis at {describe_target(module.params)}: {exc}"
        if applied:
            msg += f" (already applied: {', '.join(applied)})"
        module.fail_json(msg=msg, changed=bool(applied), applied=applied)
    finally:
        client.close()
    result = result_of(change, module.params, module._diff)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
