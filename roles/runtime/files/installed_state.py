"""Print what the virtualenv holds of netmigrate as JSON: its version and which requirements of
the asked-for extras are missing (run with the virtualenv's Python; stdlib only).

The version alone cannot tell a host that needs an extra it never got from one that is done:
Ansible's pip module ignores extras when it decides whether a requirement is present.
"""

import importlib.metadata as md
import json
import re
import sys

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _missing(extras: set[str]) -> list[str]:
    missing: list[str] = []
    for req in md.requires("netmigrate") or []:
        marker = req.partition(";")[2]
        wanted = {e.lower() for e in _EXTRA.findall(marker)}
        if not wanted & extras:
            continue
        match = _NAME.match(req)
        if match is None:
            continue
        name = match[1]
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    return sorted(missing)


def main() -> int:
    extras = {e.lower() for e in sys.argv[1:]}
    try:
        state = {"version": md.version("netmigrate"), "missing": _missing(extras)}
    except md.PackageNotFoundError:
        state = {"version": "", "missing": []}
    print(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
