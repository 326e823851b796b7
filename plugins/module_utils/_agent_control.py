# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Options and endpoint building shared by the modules that talk to agents' control services.

Private to this collection: ``migration`` and ``migration_info`` take the same ``control_tls``
option and turn an endpoint dict into a ``netmigrate.migration.AgentEndpoint`` the same way.
"""

from __future__ import annotations

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import optional_import

CONTROL_TLS_SPEC: dict[str, t.Any] = dict(
    type="dict",
    options=dict(
        ca=dict(type="path", required=True),
        cert=dict(type="path"),
        key=dict(type="path", no_log=False),
        server_name=dict(type="str", default=""),
    ),
    required_together=[("cert", "key")],
)


def agent_endpoint(mig: t.Any, params: dict[str, t.Any], tls: dict[str, t.Any] | None) -> t.Any:
    """``AgentEndpoint`` for ``params`` (server_id, control, optional data) and TLS options."""
    control_tls = None
    if tls:
        # The package's one builder of the channel's TLS options: paths as Path objects.
        channel = optional_import("netmigrate.agent.channel")
        control_tls = channel.tls_from_files(
            tls["ca"], tls.get("cert"), tls.get("key"), tls.get("server_name")
        )
    return mig.AgentEndpoint(
        server_id=params["server_id"],
        control=params["control"],
        data=params.get("data") or "",
        tls=control_tls,
    )
