"""Add to a wheelhouse the dependencies that other interpreters need (run on the controller).

``pip wheel`` resolves environment markers for the interpreter that runs it: a host on Python
3.11.2 needs ``async-timeout`` for ``redis`` where the controller on 3.11.9 does not. Given the
hosts' marker environments (JSON, one per argument after the wheelhouse), this walks every
wheel's ``Requires-Dist``, keeps what a host's markers select, and builds the missing
requirements with ``pip wheel`` until nothing is missing. Prints the names it added, as JSON.

``--extra NAME`` (repeatable, before the wheelhouse): netmigrate's extras some host installs
(``bench`` for the load generator); their requirements count as selected for netmigrate's own
wheel only, never as the same-named extra of a dependency.
"""

import argparse
import json
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def _requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode())
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def _missing(
    wheelhouse: Path, environments: list[dict[str, str]], extras: list[str]
) -> set[str]:
    wheels = sorted(wheelhouse.glob("*.whl"))
    have = {parse_wheel_filename(w.name)[0] for w in wheels}
    missing: set[str] = set()
    for wheel in wheels:
        own = parse_wheel_filename(wheel.name)[0] == "netmigrate"
        selectors = ["", *extras] if own else [""]
        for req in _requirements(wheel):
            wanted = req.marker is None or any(
                req.marker.evaluate(env | {"extra": extra})
                for env in environments
                for extra in selectors
            )
            if wanted and canonicalize_name(req.name) not in have:
                missing.add(f"{req.name}{req.specifier}")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("wheelhouse", type=Path)
    parser.add_argument("environments", nargs="*", type=json.loads)
    args = parser.parse_args()
    wheelhouse, environments = args.wheelhouse, args.environments
    added: list[str] = []
    for _round in range(10):
        missing = _missing(wheelhouse, environments, args.extra)
        if not missing:
            print(json.dumps(sorted(added)))
            return 0
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse)]
        subprocess.run([*argv, *sorted(missing)], check=True)
        added += sorted(missing)
    print(f"still missing after 10 rounds: {sorted(missing)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
