#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: p4_register_info
short_description: Read register values of a P4Runtime target
version_added: 0.1.0
description:
  - Reads, and never changes, cells of a P4 register.
  - Without O(keyspace) the cells are read with P4Runtime C(RegisterEntry). BMv2's
    C(simple_switch_grpc) does not serve that and answers C(UNIMPLEMENTED); the task then fails
    with the switch's message.
  - With O(keyspace), register C(NetMigrateIngress.slot_map) is read through the data plane
    instead (C(SLOT_READ) packet-outs answered by packet-ins, as
    M(netmigrate.core.slot_map) does), which works on every NetMigrate target. Cells are then
    the keyspace's slots, decoded into owner and target.
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
  register:
    description:
      - Register name from the P4Info (short names work when unique).
    type: str
    required: true
  indices:
    description:
      - Cells to read (with O(keyspace), slots of the keyspace). Every cell when omitted.
    type: list
    elements: int
  keyspace:
    description:
      - Read the slot map of this keyspace through packet-out C(SLOT_READ). Only for the
        C(slot_map) register; the keyspace's C(NetMigrateIngress.keyspace) entry must be
        installed.
    type: dict
    suboptions:
      id:
        description:
          - Keyspace id.
        type: int
        required: true
      service_address:
        description:
          - The keyspace's service IPv4 address.
        type: str
        required: true
      service_port:
        description:
          - The keyspace's service UDP port.
        type: int
        required: true
seealso:
  - module: netmigrate.core.slot_map
  - module: netmigrate.core.p4_info
"""

EXAMPLES = r"""
- name: Slots 0 to 9 of keyspace 1, on any target (BMv2 included)
  netmigrate.core.p4_register_info:
    address: 127.0.0.1:9559
    register: NetMigrateIngress.slot_map
    indices: "{{ range(0, 10) | list }}"
    keyspace:
      id: 1
      service_address: 10.9.0.100
      service_port: 50000

- name: Raw register cells through RegisterEntry (targets that serve it)
  netmigrate.core.p4_register_info:
    address: 127.0.0.1:9559
    register: NetMigrateIngress.slot_map
    indices: [0, 1]
"""

RETURN = r"""
register:
  description: Full P4Info name of the register.
  returned: success
  type: str
  sample: NetMigrateIngress.slot_map
values:
  description:
    - Cells in index order. Without O(keyspace) each has C(index) and C(value) (an integer for
      a bit string, otherwise the P4Data in text format); with O(keyspace) each has C(index)
      (the slot), C(owner) and C(target).
  returned: success
  type: list
  elements: dict
  sample: [{"index": 0, "value": 513}]
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import optional_import
from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    TaskFailure,
    p4rt,
    p4rt_module,
    run_p4rt,
)

SLOT_MAP = "NetMigrateIngress.slot_map"


def argument_spec() -> dict[str, t.Any]:
    return dict(
        register=dict(type="str", required=True),
        indices=dict(type="list", elements="int"),
        keyspace=dict(
            type="dict",
            no_log=False,  # a keyspace (slot map id and address), not a key
            options=dict(
                id=dict(type="int", required=True),
                service_address=dict(type="str", required=True),
                service_port=dict(type="int", required=True),
            ),
        ),
    )


def decode(data: t.Any) -> t.Any:
    if data.WhichOneof("data") == "bitstring":
        return int.from_bytes(data.bitstring, "big")
    return str(data).strip()


async def read_register_entries(session: t.Any, register: t.Any, indices: t.Any) -> list[t.Any]:
    p4r = optional_import("finsy.proto").p4r
    if indices is None:
        requests = [p4r.Entity(register_entry=p4r.RegisterEntry(register_id=register.id))]
    else:
        requests = [
            p4r.Entity(
                register_entry=p4r.RegisterEntry(register_id=register.id, index=p4r.Index(index=i))
            )
            for i in indices
        ]
    cells = [e.register_entry for e in await session.read(requests)]
    return [
        dict(index=c.index.index, value=decode(c.data))
        for c in sorted(cells, key=lambda c: c.index.index)
    ]


async def read_slots(session: t.Any, keyspace: dict[str, t.Any], indices: t.Any) -> list[t.Any]:
    lib = p4rt()
    ks = lib.Keyspace(keyspace["id"], keyspace["service_address"], keyspace["service_port"])
    slots = await lib.read_slot_map(session, ks, indices)
    return [dict(index=s, owner=e.owner, target=e.target) for s, e in sorted(slots.items())]


def main() -> None:
    module = p4rt_module(argument_spec())
    params = module.params

    async def work(session: t.Any) -> dict[str, t.Any]:
        try:
            register = session.schema.registers[params["register"]]
        except (KeyError, ValueError) as exc:
            raise TaskFailure(f"no such register in the switch's P4Info: {exc}") from None
        if params["keyspace"]:
            if register.name != SLOT_MAP:
                raise TaskFailure(
                    f"keyspace reads only register {SLOT_MAP} (through SLOT_READ), "
                    f"not {register.name}"
                )
            values = await read_slots(session, params["keyspace"], params["indices"])
        else:
            try:
                values = await read_register_entries(session, register, params["indices"])
            except p4rt().P4RuntimeError as exc:
                if exc.code != "UNIMPLEMENTED":
                    raise
                hint = (
                    " (give keyspace to read it through SLOT_READ)"
                    if register.name == SLOT_MAP
                    else ""
                )
                raise TaskFailure(
                    f"P4Runtime target {params['address']} does not serve RegisterEntry reads: "
                    f"{exc}{hint}",
                    grpc_code=exc.code,
                    grpc_message=exc.message,
                ) from None
        return dict(changed=False, register=register.name, values=values)

    module.exit_json(**run_p4rt(module, work))


if __name__ == "__main__":
    main()
