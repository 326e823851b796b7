"""The agent's modules stay small and talk through ``agent/interfaces.py``: the data path and the
migration sides do not import each other, nor the control service the process that runs it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from netmigrate.agent import interfaces
from netmigrate.agent.datapath import DataPath
from netmigrate.agent.source import SourceSide
from netmigrate.agent.target import TargetSide

AGENT = Path(inspect.getfile(interfaces)).parent
#: "Not much over 500 lines" (issue 11), with room for a docstring or two.
MAX_LINES = 550


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, TYPE_CHECKING and function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(*names: str) -> list[Path]:
    paths: list[Path] = []
    for name in names:
        path = AGENT / name
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [AGENT / f"{name}.py"]
    return paths


def _reaches(imports: set[str], module: str) -> bool:
    return any(i == module or i.startswith(module + ".") for i in imports)


@pytest.mark.parametrize(
    ("importers", "forbidden"),
    [
        (("datapath",), ("netmigrate.agent.source", "netmigrate.agent.target")),
        (
            ("source", "target"),
            ("netmigrate.agent.datapath", "netmigrate.agent.app", "netmigrate.agent.control"),
        ),
        (("control",), ("netmigrate.agent.app",)),
        (("interfaces",), ("netmigrate.agent.source", "netmigrate.agent.target")),
    ],
)
def test_no_import_cycle_between_the_agents_parts(
    importers: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    bad = [
        f"{path.relative_to(AGENT)} imports {module}"
        for path in _modules(*importers)
        for module in forbidden
        if _reaches(_imports(path), module)
    ]
    assert not bad


def test_no_agent_module_is_much_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(AGENT)): len(path.read_text().splitlines())
        for path in AGENT.rglob("*.py")
    }
    assert sizes  # the walk found the package
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _members(protocol: type) -> dict[str, list[str]]:
    """Method name -> parameter names of a Protocol (attributes: an empty list)."""
    out: dict[str, list[str]] = {}
    for klass in protocol.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            out.setdefault(
                name, list(inspect.signature(value).parameters) if callable(value) else []
            )
        for name in getattr(klass, "__annotations__", {}):
            out.setdefault(name, [])
    return out


@pytest.mark.parametrize(
    ("implementation", "protocol"),
    [
        (DataPath, interfaces.RequestPath),
        (DataPath, interfaces.DatagramOut),
        (SourceSide, interfaces.TransitionReplies),
        (TargetSide, interfaces.IncomingSlots),
    ],
)
def test_each_side_implements_its_interface(implementation: type, protocol: type) -> None:
    members = _members(protocol)
    assert members
    for name, params in members.items():
        if not params:  # an attribute, set in __init__
            assert f"self.{name} =" in inspect.getsource(implementation), name
            continue
        assert list(inspect.signature(getattr(implementation, name)).parameters) == params, name
