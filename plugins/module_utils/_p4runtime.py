# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""P4Runtime connection options shared by the netmigrate.core modules that reach a switch.

Private to this collection; documented by the ``netmigrate.core._p4runtime`` doc fragment (as a
P4 module's own options) and its ``switch`` fragment (as the ``switch`` option of ``migration``).
"""

from __future__ import annotations

import copy
import typing as t

#: The one election id default of the collection; the migration controller's
#: (``netmigrate.migration.SwitchEndpoint``) and the lab's are the same (a unit test checks).
DEFAULT_ELECTION_ID = 10

_CONNECTION_SPEC: dict[str, dict[str, t.Any]] = dict(
    address=dict(type="str", required=True),
    device_id=dict(type="int", default=1),
    election_id=dict(type="int", default=DEFAULT_ELECTION_ID),
    tls=dict(type="bool", default=False),
    ca_cert=dict(type="path"),
    client_cert=dict(type="path"),
    # A file name, not a secret.
    client_key=dict(type="path", no_log=False),
)

P4RUNTIME_REQUIRED_TOGETHER = [("client_cert", "client_key")]


def p4runtime_argument_spec() -> dict[str, dict[str, t.Any]]:
    """A fresh copy of the connection options, to ``update()`` with the module's own."""
    spec = copy.deepcopy(_CONNECTION_SPEC)
    spec["timeout"] = dict(type="float", default=10.0)
    return spec


def switch_argument_spec() -> dict[str, t.Any]:
    """The connection options as one ``switch`` dict option (no timeout: the library's own)."""
    return dict(
        type="dict",
        options=copy.deepcopy(_CONNECTION_SPEC),
        required_together=P4RUNTIME_REQUIRED_TOGETHER,
    )


def tls_options(lib: t.Any, params: t.Mapping[str, t.Any]) -> t.Any:
    """``netmigrate.p4rt.TlsOptions`` for the connection options ``params`` (None without
    TLS); ``lib`` is ``netmigrate.p4rt``."""
    if not params["tls"]:
        return None
    from pathlib import Path

    def path(name: str) -> t.Any:
        return Path(params[name]) if params[name] else None

    return lib.TlsOptions(ca=path("ca_cert"), cert=path("client_cert"), key=path("client_key"))
