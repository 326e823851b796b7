#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: slot_map
short_description: Read or reconcile the slot map of a NetMigrate switch
version_added: 0.1.0
description:
  - The NetMigrate switch keeps, per keyspace, one slot map entry per hash slot - the owner
    server of the slot and, while it migrates, its target server.
  - With O(state=read) the module returns the map of the whole keyspace, compressed into ranges
    of consecutive slots with the same entry.
  - With O(state=present) the module makes the slots given in O(ranges) hold the given
    entries, writing only the slots that differ.
  - The map is reached through the data plane - C(SLOT_READ) and C(SLOT_SET) packet-outs to the
    keyspace's service address, answered by packet-ins - because BMv2's P4Runtime server does
    not serve C(RegisterEntry). The keyspace's entry in table C(NetMigrateIngress.keyspace)
    must be installed, and the session must be the primary controller.
  - The wanted map is given explicitly (O(ranges)), or comes from the agents' persisted state
    (O(agents)) - a slot an agent owns gets that agent as owner, a slot in flight gets its
    source as owner and its target as target; slots nobody owns, or two agents claim, are left
    as they are (the latter reported in RV(reconcile.conflicts)).
  - O(agents) goes with O(state=present) and lists every agent of the keyspace; the switch must
    have the keyspace entry and, for each agent, its C(server_port) and C(server_rewrite)
    entries and clone session. O(control_tls) is the TLS towards them.
  - The have-vs-want comparison and the writes are C(netmigrate.p4rt)'s
    (C(ensure_slot_map)), the reconciliation C(netmigrate.migration)'s (C(reconcile)).
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._p4runtime
  - netmigrate.core._agent_control
  - netmigrate.core._agent_control.agents
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the slots and reports the ranges that would change, without writing.
  diff_mode:
    support: full
    details: The ranges that change, with their entries before and after.
  platform:
    platforms: posix
options:
  keyspace_id:
    description:
      - Keyspace id, as in the keyspace's C(set_keyspace) entry.
    type: int
    required: true
  service_address:
    description:
      - The keyspace's service IPv4 address (the key of its C(NetMigrateIngress.keyspace)
        entry).
    type: str
    required: true
  service_port:
    description:
      - The keyspace's service UDP port.
    type: int
    required: true
  state:
    description:
      - V(read) returns the map and changes nothing.
      - V(present) makes the slots of O(ranges) hold their entries, or with O(agents) makes the
        map match what the agents own.
    type: str
    choices: [read, present]
    default: read
  ranges:
    description:
      - The wanted map, as ranges of slots. Slots not covered keep their entry unless
        O(purge=true). Ranges must not overlap.
    type: list
    elements: dict
    default: []
    suboptions:
      first:
        description:
          - First slot of the range.
        type: int
        required: true
      last:
        description:
          - Last slot of the range (inclusive); defaults to O(ranges[].first).
        type: int
      owner:
        description:
          - Owner server id; V(0) means the keyspace's default owner.
        type: int
        default: 0
      target:
        description:
          - Migration target server id; V(0) means not migrating.
        type: int
        default: 0
  purge:
    description:
      - With O(state=present), reset every slot not covered by O(ranges) to owner V(0),
        target V(0) (the keyspace's default owner, not migrating).
    type: bool
    default: false
  window:
    description:
      - Slot requests kept in flight at once.
    type: int
    default: 256
seealso:
  - module: netmigrate.core.p4_register_info
"""

EXAMPLES = r"""
- name: Read the slot map of keyspace 1
  netmigrate.core.slot_map:
    address: 127.0.0.1:9559
    keyspace_id: 1
    service_address: 10.9.0.100
    service_port: 50000
  register: slots

- name: Slots 0-8191 belong to server 1, the rest to server 2
  netmigrate.core.slot_map:
    address: 127.0.0.1:9559
    keyspace_id: 1
    service_address: 10.9.0.100
    service_port: 50000
    state: present
    ranges:
      - {first: 0, last: 8191, owner: 1}
      - {first: 8192, last: 16383, owner: 2}
"""

RETURN = r"""
ranges:
  description:
    - With O(state=read), the whole map; with O(state=present), the slots of O(ranges) (all
      slots with O(purge=true)) after the run (in check mode, as they would be).
    - With O(agents), the changed slots after the run (the first 100 changed slots).
    - Consecutive slots with the same entry form one range.
  returned: success
  type: list
  elements: dict
  sample: [{"first": 0, "last": 8191, "owner": 1, "target": 0}]
changed_ranges:
  description: Ranges of slots that were (in check mode, would be) written, before and after.
  returned: success
  type: list
  elements: dict
  sample: [{"first": 0, "last": 99, "before": {"owner": 0, "target": 0},
            "after": {"owner": 1, "target": 0}}]
changed_slots:
  description:
    - Number of slots that were (would be) written.
    - With O(agents), slots whose transition epoch alone is restored count too (see
      RV(reconcile.epochs_raised)); RV(changed_ranges) shows entry changes only.
  returned: success
  type: int
  sample: 100
reconcile:
  description: With O(agents), what the reconciliation found.
  returned: when O(agents) is given
  type: dict
  contains:
    slots_checked:
      description: Slots the agents own (those the map is compared for).
      type: int
      sample: 16384
    slots_written:
      description: Slots written (0 in check mode).
      type: int
      sample: 8192
    epochs_raised:
      description:
        - Slots whose transition epoch on the switch was (would be) raised to the agents'
          (after a switch restart), written with their entry.
      type: int
      sample: 0
    conflicts:
      description: Slots left untouched because the agents disagree, with why (first 100).
      type: dict
      sample: {}
    message:
      description: Summary.
      type: str
      sample: changed 8192 of 16384 slots
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._agent_control import (
    agent_endpoint,
    agent_endpoints_spec,
    control_tls_spec,
)
from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    fail_imports,
    optional_import,
)
from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    TaskFailure,
    p4rt,
    p4rt_module,
    run_p4rt,
)


def argument_spec() -> dict[str, t.Any]:
    return dict(
        keyspace_id=dict(type="int", required=True),
        service_address=dict(type="str", required=True),
        service_port=dict(type="int", required=True),
        state=dict(type="str", choices=["read", "present"], default="read"),
        ranges=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                first=dict(type="int", required=True),
                last=dict(type="int"),
                owner=dict(type="int", default=0),
                target=dict(type="int", default=0),
            ),
        ),
        agents=agent_endpoints_spec(),
        control_tls=control_tls_spec(),
        purge=dict(type="bool", default=False),
        window=dict(type="int", default=256),
    )


def wanted_map(ranges: list[dict[str, t.Any]], purge: bool) -> dict[int, t.Any]:
    """``{slot: SlotEntry}`` from the ranges; ValueError on a bad or overlapping range."""
    lib = p4rt()
    slotset = optional_import("netmigrate.protocol.slotset")
    slot_count = optional_import("netmigrate.protocol.constants").SLOT_COUNT
    wanted: dict[int, t.Any] = {}
    for r in ranges:
        last = r["first"] if r["last"] is None else r["last"]
        entry = lib.SlotEntry(r["owner"], r["target"])
        for slot in slotset.check_range(r["first"], last):
            if slot in wanted:
                raise ValueError(f"slot {slot} is in more than one range")
            wanted[slot] = entry
    if purge:
        for slot in range(slot_count):
            wanted.setdefault(slot, lib.SlotEntry())
    return wanted


def diff_result(module: t.Any, diff: t.Any, changed_slots: int) -> dict[str, t.Any]:
    """The result keys every state shares, from the library's ``SlotMapDiff``."""
    out: dict[str, t.Any] = dict(
        changed=diff.changed,
        ranges=diff.ranges(),
        changed_ranges=diff.changed_ranges(),
        changed_slots=changed_slots,
    )
    if module._diff:
        out["diff"] = diff.diff()
    return out


def reconcile_with_agents(module: t.Any, slotmap: t.Any) -> dict[str, t.Any]:
    """state=present with agents: the migration controller's reconcile over our session."""
    fail_imports(module, "netmigrate.migration")
    migration = optional_import("netmigrate.migration")
    params = module.params
    try:
        agents = [agent_endpoint(migration, a, params["control_tls"]) for a in params["agents"]]
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    keyspace = migration.KeyspaceRef(
        params["keyspace_id"], params["service_address"], params["service_port"]
    )

    async def work(session: t.Any) -> dict[str, t.Any]:
        try:
            result = await migration.reconcile(session, keyspace, agents, check=module.check_mode)
        except migration.MigrationError as exc:
            raise TaskFailure(f"reconcile: {exc}", grpc_code=exc.code) from None
        diff = slotmap.SlotMapDiff.of_changes(
            {s: (d["before"], d["after"]) for s, d in result.diff.items()}, result.slots_written
        )
        info = result.to_json()
        # The diff holds the first 100 slots whose entry changes; slots_to_write counts every
        # slot written (or, in check mode, to be written), an epoch-only restore included.
        out = diff_result(module, diff, result.slots_to_write)
        out.update(
            changed=result.changed,
            reconcile=dict(
                slots_checked=info["slots_checked"],
                slots_written=info["slots_written"],
                epochs_raised=info["epochs_raised"],
                conflicts={str(k): v for k, v in info["conflicts"].items()},
                message=info["message"],
            ),
        )
        return out

    return run_p4rt(module, work)


def main() -> None:
    module = p4rt_module(
        argument_spec(), mutually_exclusive=[("ranges", "agents"), ("purge", "agents")]
    )
    slotmap = optional_import("netmigrate.p4rt.slotmap")
    params = module.params
    if params["agents"] and params["state"] == "present":
        module.exit_json(**reconcile_with_agents(module, slotmap))
    try:
        wanted = (
            wanted_map(params["ranges"], params["purge"]) if params["state"] == "present" else {}
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    lib = p4rt()
    keyspace = lib.Keyspace(
        params["keyspace_id"], params["service_address"], params["service_port"]
    )
    window = params["window"]

    async def work(session: t.Any) -> dict[str, t.Any]:
        if params["state"] == "read":
            have = await slotmap.read_slot_map(session, keyspace, window=window)
            return diff_result(module, slotmap.SlotMapDiff(have, have), 0)
        diff = await slotmap.ensure_slot_map(
            session, keyspace, wanted, check=module.check_mode, window=window
        )
        return diff_result(module, diff, len(diff.changes))

    module.exit_json(**run_p4rt(module, work))


if __name__ == "__main__":
    main()
