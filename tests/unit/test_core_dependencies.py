"""The core install (no ``netmigrate[bench]`` extra) imports and runs without the bench stack.

Each check runs in a fresh interpreter whose import system refuses the bench extra's libraries
(``pyproject.toml``'s ``bench`` extra) and ``netmigrate.bench`` itself, as a host that installed
only ``netmigrate`` would: a product module that imports either fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from netmigrate.cli import BENCH_EXTRA

#: What an agent, switch or controller host runs; none of it may need the benchmark package.
PRODUCT_PACKAGES = (
    "agent",
    "switch",
    "migration",
    "client",
    "p4rt",
    "lab",
    "protocol",
    "rediscmd",
    "gateway",
    "testbed",
)

#: A host without the extra lacks its libraries; product code must not need the bench package.
CORE_BLOCKED = frozenset(BENCH_EXTRA | {"netmigrate.bench"})

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _run(code: str, blocked: frozenset[str] = CORE_BLOCKED) -> subprocess.CompletedProcess[str]:
    blocker = BLOCKER.format(blocked=sorted(blocked))
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_blocker_blocks() -> None:
    """Guard against a blocker that lets everything through (then the tests below prove nothing)."""
    for name in (*sorted(BENCH_EXTRA), "netmigrate.bench.history"):
        done = _run(f"import {name}")
        assert done.returncode != 0
        assert "(blocked)" in done.stderr, done.stderr


@pytest.mark.parametrize("package", PRODUCT_PACKAGES)
def test_every_product_module_imports_without_the_bench_stack(package: str) -> None:
    done = _run(
        f"""
        import importlib, pkgutil
        import netmigrate.{package} as pkg

        names = [pkg.__name__] + [
            m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
        ]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1


@pytest.mark.parametrize("argv", [[], ["agent"], ["migrate"], ["switch"], ["kv"], ["lab"]])
def test_core_commands_run_without_the_bench_stack(argv: list[str]) -> None:
    done = _run(
        f"""
        import sys
        from netmigrate.cli import main

        sys.argv = ["netmigrate", *{argv!r}, "--help"]
        sys.exit(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert "usage: netmigrate" in done.stdout


def test_bench_without_its_extra_says_what_to_install() -> None:
    done = _run(
        """
        import sys
        from netmigrate.cli import main

        sys.exit(main(["bench", "report", "--help"]))
        """,
        blocked=BENCH_EXTRA,
    )
    assert done.returncode == 2
    assert "pip install 'netmigrate[bench]'" in done.stderr


def test_no_product_module_imports_the_bench_package_even_lazily() -> None:
    """Importing is not enough: an import inside a function only fails when it runs."""
    import ast
    from pathlib import Path

    import netmigrate

    root = Path(netmigrate.__file__).parent
    offenders = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in BENCH_EXTRA or name.startswith("netmigrate.bench"):
                        offenders.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    assert offenders == []
