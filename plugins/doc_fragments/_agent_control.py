# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the agent endpoint and control-service TLS options
(plugins/module_utils/_agent_control.py).

``netmigrate.core._agent_control`` documents O(control_tls); ``.source``, ``.target`` and
``.agents`` document the endpoint options of that name. The endpoint's suboptions are written
once here and indented into each.
"""

from __future__ import annotations

import textwrap

_ENDPOINT = r"""
server_id:
  description:
    - Server id of the agent in the keyspace (1..254).
  type: int
  required: true
control:
  description:
    - The agent's gRPC control service, V(HOST:PORT), as the module (and, in a migration,
      the other agent) reaches it.
  type: str
  required: true
data:
  description:
    - The agent's UDP data address, V(HOST:PORT). When set, a migration checks it against
      what the agent reports.
  type: str
  default: ""
"""


def _endpoint_option(name: str, head: str) -> str:
    """The YAML of option ``name``: ``head`` (description, type...) and the endpoint's
    suboptions."""
    body = (
        textwrap.dedent(head).strip("\n")
        + "\nsuboptions:\n"
        + textwrap.indent(_ENDPOINT.strip("\n"), "  ")
    )
    return f"options:\n  {name}:\n" + textwrap.indent(body, "    ")


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  control_tls:
    description:
      - Mutual TLS towards the agents' control services. Agents provisioned by the
        P(netmigrate.core.agent#role) role require it (the default) and refuse a caller without
        a client certificate of their CA; the C(controller_tls) entry point of that role
        installs one (see docs/security.md).
      - Without it the channel is plain text, which only agents run with
        C(agent_control_tls=false) accept.
    type: dict
    suboptions:
      ca:
        description:
          - CA certificates that verify the agents.
        type: path
        required: true
      cert:
        description:
          - Client certificate, signed by the agents' CA (required by role-provisioned agents).
        type: path
      key:
        description:
          - Key of O(control_tls.cert).
        type: path
      server_name:
        description:
          - Name expected in the agents' certificates, when it differs from the address.
        type: str
        default: ""
"""


# Set after the class: ansible-test sanity (yamllint) reads only string literals in the class
# body, while Ansible reads these attributes from the imported class like the others.
ModuleDocFragment.SOURCE = _endpoint_option(
    "source",
    """
    description:
      - The source server's agent (the owner of the slots).
    type: dict
    required: true
    """,
)

ModuleDocFragment.TARGET = _endpoint_option(
    "target",
    """
    description:
      - The target server's agent (where the slots go).
    type: dict
    """,
)

ModuleDocFragment.AGENTS = _endpoint_option(
    "agents",
    """
    description:
      - NetMigrate agents, each reached on its control service (TLS from O(control_tls)).
    type: list
    elements: dict
    """,
)
