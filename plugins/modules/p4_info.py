#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: p4_info
short_description: Facts about the pipeline, tables and counters of a P4Runtime target
version_added: 0.1.0
description:
  - Reads, and never changes, what a P4Runtime target runs - the pipeline cookie, every table
    of its P4Info with the number of entries (and the entries themselves on request) and the
    values of the counters asked for.
  - Uses the P4Info the switch runs; a switch without a pipeline fails the task with
    C(FAILED_PRECONDITION).
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._p4runtime
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  tables:
    description:
      - Report only these tables (P4Info names; short names work when unique).
        All tables when empty.
    type: list
    elements: str
    default: []
  include_entries:
    description:
      - Also return the entries of the reported tables, not only their number.
    type: bool
    default: false
  counters:
    description:
      - Counters to read, by P4Info name (short names work when unique).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Counter name, for example V(NetMigrateIngress.decision_counter).
        type: str
        required: true
      indices:
        description:
          - Cells to read; every cell when omitted.
        type: list
        elements: int
seealso:
  - module: netmigrate.core.p4_register_info
  - module: netmigrate.core.p4_table_entry
"""

EXAMPLES = r"""
- name: What does the switch run
  netmigrate.core.p4_info:
    address: 127.0.0.1:9559
  register: switch

- name: Keyspace entries and the decision counters 0 to 3
  netmigrate.core.p4_info:
    address: 127.0.0.1:9559
    tables: [NetMigrateIngress.keyspace]
    include_entries: true
    counters:
      - name: NetMigrateIngress.decision_counter
        indices: [0, 1, 2, 3]
"""

RETURN = r"""
cookie:
  description: The switch's pipeline cookie (null when the pipeline has none).
  returned: success
  type: int
  sample: 13389579792655458357
tables:
  description: The tables of the P4Info (those named in O(tables), or all).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Table name.
      type: str
      sample: NetMigrateIngress.server_port
    size:
      description: Table size from the P4Info.
      type: int
      sample: 256
    entry_count:
      description: Number of entries (the default entry not counted).
      type: int
      sample: 3
    entries:
      description: The entries, with O(include_entries=true).
      type: list
      elements: dict
      returned: when asked for
      sample: [{"table": "NetMigrateIngress.server_port", "match": {"meta.dest_server": 1},
                "action": "NetMigrateIngress.set_server_port", "params": {"port": 1}}]
counters:
  description: Counter cells by counter name, as given in O(counters).
  returned: success
  type: dict
  sample: {"NetMigrateIngress.decision_counter": [{"index": 0, "packets": 12, "bytes": 840}]}
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    p4rt,
    p4rt_module,
    run_p4rt,
)


def argument_spec() -> dict[str, t.Any]:
    return dict(
        tables=dict(type="list", elements="str", default=[]),
        include_entries=dict(type="bool", default=False),
        counters=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                name=dict(type="str", required=True),
                indices=dict(type="list", elements="int"),
            ),
        ),
    )


async def gather(session: t.Any, params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    lib = p4rt()
    cookie = await lib.current_cookie(session)
    schema = session.schema
    # Unknown names fail here, before anything is read (finsy raises ValueError or KeyError).
    try:
        selected = [schema.tables[name] for name in params["tables"]] or list(schema.tables)
        for counter in params["counters"]:
            schema.counters[counter["name"]]
    except (KeyError, ValueError) as exc:
        raise lib.P4RuntimeError(f"not in the switch's P4Info: {exc}", code="NOT_FOUND") from None
    entries = await lib.read_table_entries(session, [t.name for t in selected])
    by_table: dict[int, list[t.Any]] = {}
    for te in entries:
        by_table.setdefault(te.table_id, []).append(te)
    tables = []
    for table in selected:
        have = by_table.get(table.id, [])
        info: dict[str, t.Any] = dict(name=table.name, size=table.size, entry_count=len(have))
        if params["include_entries"]:
            info["entries"] = [lib.describe(session, te) for te in have]
        tables.append(info)
    counters: dict[str, list[dict[str, int]]] = {}
    for counter in params["counters"]:
        cells = await lib.read_counters(session, counter["name"], counter["indices"])
        counters[counter["name"]] = [
            dict(index=i, packets=v.packets, bytes=v.bytes) for i, v in sorted(cells.items())
        ]
    return dict(changed=False, cookie=cookie, tables=tables, counters=counters)


def main() -> None:
    module = p4rt_module(argument_spec())
    module.exit_json(**run_p4rt(module, lambda session: gather(session, module.params)))


if __name__ == "__main__":
    main()
