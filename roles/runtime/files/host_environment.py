"""Print the PEP 508 marker environment of this interpreter as JSON (stdlib only: runs on a
fresh host). The controller resolves the wheelhouse's dependencies with it, because pip
evaluates markers such as ``python_full_version < "3.11.3"`` only for its own interpreter."""

import json
import os
import platform
import sys


def _version(info: object) -> str:
    v = f"{info.major}.{info.minor}.{info.micro}"  # type: ignore[attr-defined]
    if info.releaselevel != "final":  # type: ignore[attr-defined]
        v += info.releaselevel[0] + str(info.serial)  # type: ignore[attr-defined]
    return v


print(
    json.dumps(
        {
            "implementation_name": sys.implementation.name,
            "implementation_version": _version(sys.implementation.version),
            "os_name": os.name,
            "platform_machine": platform.machine(),
            "platform_release": platform.release(),
            "platform_system": platform.system(),
            "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform,
        }
    )
)
