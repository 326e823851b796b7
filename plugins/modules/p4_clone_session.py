#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: p4_clone_session
short_description: Ensure clone sessions of a P4Runtime target's packet replication engine
version_added: 0.1.0
description:
  - Ensures clone sessions (C(CloneSessionEntry)) present or absent. The NetMigrate program
    clones a request to server N through clone session N (one replica, the server's port).
  - Sessions are compared by value (replicas as port/instance pairs, class of service,
    truncation length); only the difference is written, in one C(Write) batch.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._p4runtime
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the clone sessions and reports the same changes without writing.
  diff_mode:
    support: full
    details: The sessions that change, before and after.
  platform:
    platforms: posix
options:
  sessions:
    description:
      - The clone sessions.
    type: list
    elements: dict
    required: true
    suboptions:
      session_id:
        description:
          - Clone session id, from 1.
        type: int
        required: true
      replicas:
        description:
          - Where clones go. Ignored with O(state=absent).
        type: list
        elements: dict
        default: []
        suboptions:
          port:
            description:
              - Egress port.
            type: int
            required: true
          instance:
            description:
              - Replica instance (lets one port receive several copies).
            type: int
            default: 0
      class_of_service:
        description:
          - Class of service of the clones.
        type: int
        default: 0
      packet_length_bytes:
        description:
          - Truncate clones to this many bytes; V(0) keeps them whole.
        type: int
        default: 0
  state:
    description:
      - V(present) creates missing sessions and modifies sessions that differ.
      - V(absent) deletes the sessions with these ids.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: netmigrate.core.p4_table_entry
"""

EXAMPLES = r"""
- name: Clone session N sends to server N's port
  netmigrate.core.p4_clone_session:
    address: 127.0.0.1:9559
    sessions:
      - session_id: 1
        replicas: [{port: 1}]
      - session_id: 2
        replicas: [{port: 2}]

- name: Remove the clone session of server 2
  netmigrate.core.p4_clone_session:
    address: 127.0.0.1:9559
    state: absent
    sessions:
      - session_id: 2
"""

RETURN = r"""
inserted:
  description: Ids of the sessions that were (in check mode, would be) created.
  returned: success
  type: list
  elements: int
  sample: [1, 2]
modified:
  description: Ids of the sessions that were (would be) modified.
  returned: success
  type: list
  elements: int
  sample: []
deleted:
  description: Ids of the sessions that were (would be) deleted.
  returned: success
  type: list
  elements: int
  sample: []
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    p4rt,
    p4rt_module,
    run_p4rt,
)


def argument_spec() -> dict[str, t.Any]:
    return dict(
        sessions=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                session_id=dict(type="int", required=True),
                replicas=dict(
                    type="list",
                    elements="dict",
                    default=[],
                    options=dict(
                        port=dict(type="int", required=True),
                        instance=dict(type="int", default=0),
                    ),
                ),
                class_of_service=dict(type="int", default=0),
                packet_length_bytes=dict(type="int", default=0),
            ),
        ),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )


def specs(sessions: list[dict[str, t.Any]]) -> list[t.Any]:
    lib = p4rt()
    return [
        lib.CloneSessionSpec(
            s["session_id"],
            tuple((r["port"], r["instance"]) for r in s["replicas"]),
            class_of_service=s["class_of_service"],
            packet_length_bytes=s["packet_length_bytes"],
        )
        for s in sessions
    ]


def main() -> None:
    module = p4rt_module(argument_spec())
    wanted = specs(module.params["sessions"])

    async def work(session: t.Any) -> dict[str, t.Any]:
        result = await p4rt().ensure_clone_sessions(
            session,
            wanted,
            present=module.params["state"] == "present",
            check_mode=module.check_mode,
        )
        out = dict(
            changed=result.changed,
            inserted=result.inserted,
            modified=result.modified,
            deleted=result.deleted,
        )
        if module._diff:
            out["diff"] = dict(
                before=dict(sessions=result.before), after=dict(sessions=result.after)
            )
        return out

    module.exit_json(**run_p4rt(module, work))


if __name__ == "__main__":
    main()
