# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the agents' control-service TLS option (module_utils/_agent_control.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  control_tls:
    description:
      - TLS towards the agents' control services. Without it the channel is plain text.
    type: dict
    suboptions:
      ca:
        description:
          - CA certificates that verify the agents.
        type: path
        required: true
      cert:
        description:
          - Client certificate, when the agents require one.
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
