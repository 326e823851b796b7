#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: p4_table_entry
short_description: Ensure P4 table entries are present or absent on a P4Runtime target
version_added: 0.1.0
description:
  - Ensures a list of table entries, named as in the P4Info, on a P4Runtime target.
  - Reads what the switch has in the tables involved, compares entries by value (match fields,
    priority, action and parameters) and writes only the difference, in one C(Write) batch.
    An entry whose match exists with another action or other parameters is modified.
  - With O(purge=true) the other entries of the tables named in O(entries) are deleted, so
    those tables hold exactly O(entries).
  - Every entry is encoded against the P4Info before anything is written, so a wrong table,
    field, action or value fails the task with nothing changed.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._p4runtime
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the tables and reports the same changes without writing.
  diff_mode:
    support: full
    details: The entries that change, before and after (P4Info names, values as integers).
  platform:
    platforms: posix
options:
  entries:
    description:
      - The table entries.
      - 'Values of O(entries[].match) and O(entries[].params) may be integers, dotted IPv4
        (V(10.0.0.1)) or IPv6 addresses, MAC addresses (V(02:00:00:00:00:01)), or for LPM fields
        a prefix (V(10.0.0.0/24)); ternary fields take V(value/&mask) strings, range fields
        V(low...high) strings, as finsy (P4TableMatch) accepts them.'
    type: list
    elements: dict
    required: true
    suboptions:
      table:
        description:
          - Table name from the P4Info, for example V(NetMigrateIngress.server_port).
            The short name works when it is unique.
        type: str
        required: true
      match:
        description:
          - 'Match fields by P4Info name, for example V({"meta.dest_server": 1}).'
          - Leave empty (and set O(entries[].default)) for the default entry.
        type: dict
        default: {}
      action:
        description:
          - Action name from the P4Info. Needed for entries that should be present (the switch
            refuses an entry without an action).
        type: str
      params:
        description:
          - Action parameters by name.
        type: dict
        default: {}
      priority:
        description:
          - Priority, for tables with ternary, range or optional match fields.
        type: int
        default: 0
      default:
        description:
          - This is the table's default entry (set with C(MODIFY); it cannot be absent).
        type: bool
        default: false
  state:
    description:
      - V(present) inserts missing entries and modifies entries whose action differs.
      - V(absent) deletes the entries with these matches (action and parameters are ignored).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=present), also delete the entries of the named tables that are not in
        O(entries). Default entries are never deleted.
    type: bool
    default: false
  p4info:
    description:
      - P4Info file to encode the entries with. Without it the module uses the P4Info the
        switch runs (C(GetForwardingPipelineConfig)).
    type: path
seealso:
  - module: netmigrate.core.p4_pipeline
  - module: netmigrate.core.p4_info
"""

EXAMPLES = r"""
- name: Server 1 is behind port 1
  netmigrate.core.p4_table_entry:
    address: 127.0.0.1:9559
    entries:
      - table: NetMigrateIngress.server_port
        match: {meta.dest_server: 1}
        action: NetMigrateIngress.set_server_port
        params: {port: 1}
      - table: NetMigrateIngress.ipv4_lpm
        match: {hdr.ipv4.dstAddr: 10.9.0.0/24}
        action: NetMigrateIngress.ipv4_forward
        params: {dst_mac: "02:00:00:00:09:01", port: 1}

- name: The keyspace table holds exactly this service address
  netmigrate.core.p4_table_entry:
    address: 127.0.0.1:9559
    purge: true
    entries:
      - table: NetMigrateIngress.keyspace
        match: {hdr.ipv4.dstAddr: 10.9.0.100, hdr.udp.dstPort: 50000}
        action: NetMigrateIngress.set_keyspace
        params: {keyspace_id: 1, default_owner: 1, slot_base: 0}

- name: Remove server 3
  netmigrate.core.p4_table_entry:
    address: 127.0.0.1:9559
    state: absent
    entries:
      - table: NetMigrateIngress.server_port
        match: {meta.dest_server: 3}
"""

RETURN = r"""
inserted:
  description: Entries that were (in check mode, would be) inserted.
  returned: success
  type: list
  elements: dict
  sample: [{"table": "NetMigrateIngress.server_port", "match": {"meta.dest_server": 1},
            "action": "NetMigrateIngress.set_server_port", "params": {"port": 1}}]
modified:
  description: Entries that were (would be) modified, as they are after the run.
  returned: success
  type: list
  elements: dict
  sample: []
deleted:
  description: Entries that were (would be) deleted, as they were.
  returned: success
  type: list
  elements: dict
  sample: []
unchanged:
  description: Number of given entries the switch already had as wanted.
  returned: success
  type: int
  sample: 3
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    load_p4info_or_fail,
    p4rt,
    p4rt_module,
    run_p4rt,
)

_ENTRY_OPTIONS = dict(
    table=dict(type="str", required=True),
    match=dict(type="dict", default={}),
    action=dict(type="str"),
    params=dict(type="dict", default={}),
    priority=dict(type="int", default=0),
    default=dict(type="bool", default=False),
)


def argument_spec() -> dict[str, t.Any]:
    return dict(
        entries=dict(type="list", elements="dict", required=True, options=_ENTRY_OPTIONS),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        purge=dict(type="bool", default=False),
        p4info=dict(type="path"),
    )


def specs(entries: list[dict[str, t.Any]]) -> list[t.Any]:
    lib = p4rt()
    return [
        lib.TableEntrySpec(
            table=e["table"],
            match=e["match"],
            action=e["action"],
            params=e["params"],
            priority=e["priority"],
            default=e["default"],
        )
        for e in entries
    ]


def main() -> None:
    module = p4rt_module(argument_spec())
    p4info = load_p4info_or_fail(module)
    params = module.params
    wanted = specs(params["entries"])

    async def work(session: t.Any) -> dict[str, t.Any]:
        result = await p4rt().ensure_table_entries(
            session,
            wanted,
            present=params["state"] == "present",
            purge=params["purge"],
            check_mode=module.check_mode,
        )
        out = dict(
            changed=result.changed,
            inserted=result.inserted,
            modified=result.modified,
            deleted=result.deleted,
            unchanged=result.unchanged,
        )
        if module._diff:
            out["diff"] = dict(before=dict(entries=result.before), after=dict(entries=result.after))
        return out

    module.exit_json(**run_p4rt(module, work, p4info=p4info))


if __name__ == "__main__":
    main()
