# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the asyncio P4Runtime library (netmigrate.p4rt) from a module, with one error path.

Private to this collection. A module calls :func:`p4rt_module` for its AnsibleModule (shared
connection options, guarded imports), then :func:`run_p4rt` with a coroutine function that
gets an open, primary session; every library error becomes one ``fail_json`` that names the
switch, the operation, the gRPC status code and the switch's message.
"""

from __future__ import annotations

import asyncio
import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    fail_imports,
    optional_import,
)
from ansible_collections.netmigrate.core.plugins.module_utils._p4runtime import (
    P4RUNTIME_REQUIRED_TOGETHER,
    p4runtime_argument_spec,
    tls_options,
)

#: What every P4Runtime module imports before it touches the switch.
P4RT_LIBRARIES = ("grpc", "finsy", "netmigrate.p4rt")


class TaskFailure(Exception):
    """Raised by a module's coroutine to fail the task with ``fail_json(**result)`` once the
    session is closed (never exit from inside the event loop)."""

    def __init__(self, msg: str, **result: t.Any) -> None:
        super().__init__(msg)
        self.result = dict(msg=msg, **result)


def p4rt_module(
    spec: dict[str, t.Any],
    *,
    required_if: list[t.Any] | None = None,
    mutually_exclusive: list[t.Any] | None = None,
    required_together: list[t.Any] | None = None,
) -> AnsibleModule:
    """An AnsibleModule with the P4Runtime connection options plus ``spec``; fails early (with
    ``missing_required_lib``) when the libraries are not installed."""
    argument_spec = p4runtime_argument_spec()
    argument_spec.update(spec)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=required_if or [],
        mutually_exclusive=mutually_exclusive or [],
        required_together=P4RUNTIME_REQUIRED_TOGETHER + (required_together or []),
    )
    fail_imports(module, *P4RT_LIBRARIES)
    return module


def p4rt() -> t.Any:
    """The netmigrate.p4rt package (after :func:`p4rt_module` checked it imports)."""
    return optional_import("netmigrate.p4rt")


def load_p4info_or_fail(module: AnsibleModule, option: str = "p4info") -> t.Any:
    """The P4Info named by option ``option`` (None when not given), or fail naming the file."""
    from pathlib import Path

    path = module.params.get(option)
    if not path:
        return None
    session_mod = optional_import("netmigrate.p4rt.session")
    try:
        return session_mod.load_p4info(Path(path))
    except OSError as exc:
        module.fail_json(msg=f"cannot read {option} {path}: {exc}")
    except Exception as exc:  # protobuf's text_format.ParseError and friends
        module.fail_json(msg=f"{option} {path} is not a P4Info in text format: {exc}")
    raise AssertionError("unreachable")


def open_session(params: t.Mapping[str, t.Any], p4info: t.Any = None) -> t.Any:
    """A (not yet open) P4RTSession for the connection options in ``params``."""
    lib = p4rt()
    return lib.P4RTSession(
        params["address"],
        device_id=params["device_id"],
        election_id=params["election_id"],
        p4info=p4info,
        tls=tls_options(lib, params),
        timeout=params["timeout"],
    )


def error_result(exc: BaseException, address: str) -> dict[str, t.Any]:
    """``fail_json`` arguments for a library error: message, gRPC code and details."""
    lib = p4rt()
    if isinstance(exc, lib.P4RuntimeError):
        out: dict[str, t.Any] = dict(
            msg=f"P4Runtime target {address}: {exc}",
            grpc_code=exc.code,
            grpc_message=exc.message,
        )
        if exc.operation:
            out["operation"] = exc.operation
        if exc.details:
            out["update_errors"] = [
                dict(index=d.index, code=d.code, message=d.message) for d in exc.details
            ]
        return out
    return dict(msg=f"P4Runtime target {address}: {exc}")


def run_p4rt(
    module: AnsibleModule,
    work: t.Callable[[t.Any], t.Awaitable[dict[str, t.Any]]],
    *,
    p4info: t.Any = None,
) -> dict[str, t.Any]:
    """Open a primary session, ``await work(session)``, close it; its result, or fail_json."""
    lib = p4rt()
    address = module.params["address"]

    async def main() -> dict[str, t.Any]:
        session = open_session(module.params, p4info)
        await asyncio.wait_for(session.open(), module.params["timeout"])
        try:
            return await work(session)
        finally:
            await session.close()

    try:
        return asyncio.run(main())
    except TaskFailure as exc:
        module.fail_json(**exc.result)
    except TimeoutError:  # before OSError, of which it is a subclass
        module.fail_json(
            msg=f"P4Runtime target {address}: no answer within {module.params['timeout']} s",
            grpc_code="DEADLINE_EXCEEDED",
        )
    except (lib.P4RuntimeError, ValueError, OSError) as exc:
        module.fail_json(**error_result(exc, address))
    raise AssertionError("unreachable")  # fail_json exits
