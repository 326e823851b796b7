# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""P4Runtime connection options shared by the netmigrate.core P4 modules.

Private to this collection; documented by the ``netmigrate.core._p4runtime`` doc fragment.
"""

from __future__ import annotations

import copy
import typing as t

_ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = dict(
    address=dict(type="str", required=True),
    device_id=dict(type="int", default=1),
    election_id=dict(type="int", default=1),
    tls=dict(type="bool", default=False),
    ca_cert=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path"),
    timeout=dict(type="float", default=10.0),
)

P4RUNTIME_REQUIRED_TOGETHER = [("client_cert", "client_key")]


def p4runtime_argument_spec() -> dict[str, dict[str, t.Any]]:
    """A fresh copy of the connection options, to ``update()`` with the module's own."""
    return copy.deepcopy(_ARGUMENT_SPEC)
