# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Options and endpoint building shared by the modules that talk to agents' control services.

Private to this collection: ``migration`` and ``migration_info`` take the same ``control_tls``
option and turn an endpoint dict into a ``netmigrate.migration.AgentEndpoint`` the same way.
"""

from __future__ import annotations

import typing as t

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
        control_tls = mig.ControlTls(
            ca=tls["ca"], cert=tls.get("cert"), key=tls.get("key"), server_name=tls["server_name"]
        )
    return mig.AgentEndpoint(
        server_id=params["server_id"],
        control=params["control"],
        data=params.get("data") or "",
        tls=control_tls,
    )
