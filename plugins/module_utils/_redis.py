# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connection options shared by the netmigrate.core Redis modules, and a connect helper.

Private to this collection; documented by the ``netmigrate.core._redis`` doc fragment.
"""

from __future__ import annotations

import copy
import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    optional_import,
)

if t.TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

_ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = dict(
    login_host=dict(type="str"),
    login_port=dict(type="int", default=6379),
    login_unix_socket=dict(type="path"),
    login_user=dict(type="str"),
    login_password=dict(type="str", no_log=True),
    connect_timeout=dict(type="float", default=5.0),
    tls=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_certs=dict(type="path"),
    client_cert_file=dict(type="path"),
    client_key_file=dict(type="path"),
)

# For AnsibleModule(mutually_exclusive=..., required_together=...): merge with the module's own.
REDIS_MUTUALLY_EXCLUSIVE = [
    ("login_host", "login_unix_socket"),
    ("login_unix_socket", "tls"),
]
REDIS_REQUIRED_TOGETHER = [("client_cert_file", "client_key_file")]

_TLS_FILES = ("ca_certs", "client_cert_file", "client_key_file")


class RedisConnectError(Exception):
    """Could not connect or authenticate; the message names the server, never the password."""


def redis_argument_spec() -> dict[str, dict[str, t.Any]]:
    """A fresh copy of the connection options, to ``update()`` with the module's own."""
    return copy.deepcopy(_ARGUMENT_SPEC)


def describe_target(params: t.Mapping[str, t.Any]) -> str:
    """Where the module connects, for messages: ``unix:/path`` or ``host:port``."""
    if params.get("login_unix_socket"):
        return f"unix:{params['login_unix_socket']}"
    return f"{params.get('login_host') or 'localhost'}:{params['login_port']}"


def connect(params: t.Mapping[str, t.Any]) -> t.Any:
    """Open a client (str replies) and prove it works with PING, translating failures.

    No retries: a refused connection or password is reported at once instead of after the
    client library's back-off.
    """
    redis = optional_import("redis")
    if redis is None:  # callers run fail_imports() first; keep the error clear regardless
        raise RedisConnectError("the redis Python library is not installed")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    stray = [name for name in _TLS_FILES if params.get(name) and not params.get("tls")]
    if stray:
        raise RedisConnectError(f"{', '.join(stray)} only apply with tls=true")

    kwargs: dict[str, t.Any] = dict(
        username=params.get("login_user") or None,
        password=params.get("login_password") or None,
        socket_connect_timeout=params["connect_timeout"],
        socket_timeout=params["connect_timeout"],
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    if params.get("login_unix_socket"):
        kwargs["unix_socket_path"] = params["login_unix_socket"]
    else:
        kwargs.update(host=params.get("login_host") or "localhost", port=params["login_port"])
        if params.get("tls"):
            kwargs.update(
                ssl=True,
                ssl_ca_certs=params.get("ca_certs"),
                ssl_certfile=params.get("client_cert_file"),
                ssl_keyfile=params.get("client_key_file"),
                ssl_cert_reqs="required" if params["validate_certs"] else "none",
                ssl_check_hostname=bool(params["validate_certs"]),
            )

    target = describe_target(params)
    user = params.get("login_user") or "default"
    client = redis.Redis(**kwargs)
    try:
        client.ping()
    except redis.AuthenticationError as exc:  # a subclass of ConnectionError: test it first
        client.close()
        raise RedisConnectError(
            f"Redis at {target} refused the login of user {user!r}: {exc}"
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        raise RedisConnectError(f"cannot reach Redis at {target}: {exc}") from exc
    except redis.ResponseError as exc:
        client.close()
        raise RedisConnectError(f"Redis at {target} answered PING with: {exc}") from exc
    return client


def connect_or_fail(module: AnsibleModule) -> t.Any:
    """:func:`connect` with the module's parameters; ``fail_json`` on any failure."""
    try:
        return connect(module.params)
    except RedisConnectError as exc:
        module.fail_json(msg=str(exc), changed=False)
