# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guarded imports of the Python libraries the netmigrate.core modules run on the managed host.

Private to this collection. A module declares what it needs and calls :func:`fail_imports`
first thing in ``main()``; the import itself never fails, so ``ansible-doc`` and the sanity
import test work on hosts without the libraries.
"""

from __future__ import annotations

import importlib
import traceback
import types
import typing as t

from ansible.module_utils.basic import missing_required_lib

if t.TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

# Name shown to the user and where it comes from, per top-level import name.
_LIBRARIES = {
    "netmigrate": ("netmigrate", "https://example.invalid/netmigrate"),
    "redis": ("redis (redis-py)", "https://pypi.org/project/redis/"),
    "grpc": ("grpcio", "https://pypi.org/project/grpcio/"),
    "finsy": ("finsy", "https://pypi.org/project/finsy/"),
}

# missing_required_lib() renders this as "This is required <reason>."
_REASON = (
    "by the netmigrate.core modules, which drive the netmigrate Python package on the managed "
    "host: install netmigrate (pip install netmigrate, it brings redis, grpcio and finsy) into "
    "the interpreter that ansible_python_interpreter names for this host"
)

_loaded: dict[str, types.ModuleType] = {}
_errors: dict[str, str] = {}


def optional_import(name: str) -> types.ModuleType | None:
    """Import ``name`` (a dotted module path) or return None and remember the traceback."""
    if name not in _loaded and name not in _errors:
        try:
            _loaded[name] = importlib.import_module(name)
        except ImportError:
            _errors[name] = traceback.format_exc()
    return _loaded.get(name)


def fail_imports(module: AnsibleModule, *names: str) -> None:
    """``fail_json`` with one clear message if any of ``names`` cannot be imported."""
    for name in names:
        if optional_import(name) is None:
            top = name.split(".")[0]
            library, url = _LIBRARIES.get(top, (top, None))
            if top == "netmigrate" and name != top:
                library = f"netmigrate, module {name}"
            module.fail_json(
                msg=missing_required_lib(library, reason=_REASON, url=url),
                exception=_errors[name],
            )
