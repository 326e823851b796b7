# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Options and endpoint building shared by the modules that talk to agents' control services.

Private to this collection; documented by the ``netmigrate.core._agent_control`` doc fragment
(``source``, ``target`` and ``agents`` fragments for the endpoints, the default one for
``control_tls``). Every module that reaches agents (``migration``, ``migration_info``,
``slot_map``) takes its endpoints and TLS options from here, so they are spelled out once.
"""

from __future__ import annotations

import copy
import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import optional_import

_ENDPOINT_OPTIONS: dict[str, dict[str, t.Any]] = dict(
    server_id=dict(type="int", required=True),
    control=dict(type="str", required=True),
    data=dict(type="str", default=""),
)

CONTROL_TLS_SPEC: dict[str, t.Any] = dict(
    type="dict",
    options=dict(
        ca=dict(type="path", required=True),
        cert=dict(type="path"),
        # A file name, not a secret.
        key=dict(type="path", no_log=False),
        server_name=dict(type="str", default=""),
    ),
    required_together=[("cert", "key")],
)


def agent_endpoint_spec(*, required: bool = False) -> dict[str, t.Any]:
    """One agent (``source``, ``target``): a dict option with server_id, control and data."""
    return dict(type="dict", required=required, options=copy.deepcopy(_ENDPOINT_OPTIONS))


def agent_endpoints_spec() -> dict[str, t.Any]:
    """Several agents (``agents``): a list of the same dicts."""
    return dict(type="list", elements="dict", options=copy.deepcopy(_ENDPOINT_OPTIONS))


def control_tls_spec() -> dict[str, t.Any]:
    return copy.deepcopy(CONTROL_TLS_SPEC)


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
