#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: migration_info
short_description: Status of the NetMigrate migrations of a source server
version_added: 0.1.0
description:
  - Asks a source server's agent (its gRPC control service) for the migrations it runs or ran,
    from its persisted state, so it also answers after a controller or agent restart.
  - O(source) is the server whose migrations to list.
  - A thin wrapper of C(netmigrate.migration.status). Changes nothing.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - netmigrate.core._agent_control
  - netmigrate.core._agent_control.source
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  migration_id:
    description:
      - Only this migration. Without it, every migration the agent knows.
    type: str
  include_slots:
    description:
      - Also return per-slot results (large for big migrations).
    type: bool
    default: false
requirements:
  - The netmigrate Python package (with grpcio) on the host that runs the module.
seealso:
  - module: netmigrate.core.migration
"""

EXAMPLES = r"""
- name: Migrations of server 1
  netmigrate.core.migration_info:
    source: {server_id: 1, control: "10.0.0.11:7000"}
  register: info

- name: Fail unless the migration finished
  ansible.builtin.assert:
    that: info.migrations | selectattr('state', 'equalto', 'FINALIZED') | list | length == 1
"""

RETURN = r"""
migrations:
  description: The migrations, each as the RV(netmigrate.core.migration#module:migration) result.
  returned: success
  type: list
  elements: dict
  sample:
    - migration_id: ks50000-1to2-5c1e
      state: FINALIZED
      slots_total: 4096
      slots_done: 4096
      keys_copied: 5012
"""

import asyncio
import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmigrate.core.plugins.module_utils._agent_control import (
    agent_endpoint,
    agent_endpoint_spec,
    control_tls_spec,
)
from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    fail_imports,
    optional_import,
)

ARGUMENT_SPEC: dict[str, t.Any] = dict(
    source=agent_endpoint_spec(required=True),
    migration_id=dict(type="str"),
    include_slots=dict(type="bool", default=False),
    control_tls=control_tls_spec(),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    fail_imports(module, "grpc", "netmigrate.migration")
    mig = optional_import("netmigrate.migration")
    p = module.params
    try:
        source = agent_endpoint(mig, p["source"], p["control_tls"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        found = asyncio.run(mig.status(source, p["migration_id"], include_slots=p["include_slots"]))
    except mig.MigrationError as exc:
        if exc.code != "NOT_FOUND":
            module.fail_json(msg=f"cannot read the migrations ({exc.code}): {exc}", code=exc.code)
        found = []
    except (OSError, ValueError, TimeoutError) as exc:
        module.fail_json(msg=f"cannot read the migrations: {exc}")
    migrations = []
    for result in found:
        doc = result.to_json(slots=p["include_slots"])
        doc.pop("changed", None)
        migrations.append(doc)
    module.exit_json(changed=False, migrations=migrations)


if __name__ == "__main__":
    main()
