"""The package's layers, as written once in ``docs/architecture.md``, hold in the code.

Every ``import`` of ``netmigrate`` code (at module level or inside a function, absolute or
relative) is read from the source with ``ast``; string imports of the collection
(``optional_import("netmigrate....")``) from the plugins' text. A module may import its own
package and any package of a lower layer, never a package of its own layer or a higher one;
product code never imports the benchmark harness or test code.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "netmigrate"
DOC = ROOT / "docs" / "architecture.md"

#: Packages that are not product code: nothing in the product may import them.
HARNESS = {"bench"}


@dataclass(frozen=True)
class Layers:
    rank: dict[str, int]  # top-level name under netmigrate -> layer number

    def of(self, package: str) -> int:
        if package == "__init__":
            return 0  # netmigrate/__init__.py: the version, nothing that imports
        if package not in self.rank:
            raise AssertionError(
                f"netmigrate.{package} is in no layer: add it to the table of {DOC.name}"
            )
        return self.rank[package]


def read_layers(text: str) -> Layers:
    """The table between the ``layers:begin`` / ``layers:end`` markers: layer, then packages."""
    m = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    assert m, f"{DOC} has no layer table between <!-- layers:begin --> and <!-- layers:end -->"
    rank: dict[str, int] = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0][:1].isdigit():
            continue
        layer = int(cells[0].split()[0])
        for name in re.findall(r"`([a-z_0-9]+)`", cells[1]):
            assert name not in rank, f"{name} is in two layers of {DOC.name}"
            rank[name] = layer
    assert rank, f"no layer rows in {DOC}"
    return Layers(rank)


def layer_titles(text: str) -> dict[int, str]:
    """Layer number -> its name in the table (``2 components`` -> ``components``)."""
    m = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    titles: dict[int, str] = {}
    for line in (m.group(1) if m else "").splitlines():
        cell = line.strip().strip("|").split("|")[0].strip()
        if cell[:1].isdigit():
            number, _, title = cell.partition(" ")
            titles[int(number)] = title.strip() or number
    return titles


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_netmigrate(path: Path) -> set[str]:
    """Dotted ``netmigrate....`` names this file imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "netmigrate")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "netmigrate":
                continue
            if mod == "netmigrate":
                # ``from netmigrate import agent`` names a package; ``__version__`` does not.
                found.update(f"netmigrate.{a.name}" for a in node.names)
            else:
                found.add(mod)
    return found


def imported_foreign(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def layer_violations(layers: Layers) -> list[str]:
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if "_generated" in path.parts:
            continue
        own = package_of(path)
        own_layer = layers.of(own)
        rel = path.relative_to(SRC.parent)
        for name in sorted(imported_netmigrate(path)):
            parts = name.split(".")
            if len(parts) < 2:
                continue
            other = parts[1]
            if other == own:
                continue
            if other not in layers.rank and not (SRC / other).exists():
                continue  # an attribute of netmigrate/__init__.py, e.g. __version__
            if other in HARNESS and own not in HARNESS and layers.of(own) < layers.of(other):
                problems.append(f"{rel}: product code imports the harness: {name}")
            elif layers.of(other) >= own_layer:
                problems.append(
                    f"{rel} (layer {own_layer}) imports {name} (layer {layers.of(other)})"
                )
        for top in sorted(imported_foreign(path) & {"tests", "pytest", "conftest"}):
            problems.append(f"{rel}: product code imports test code: {top}")
    return problems


def collection_violations() -> list[str]:
    problems: list[str] = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for name in re.findall(r"[\"'](netmigrate\.[a-z_0-9.]+)[\"']", path.read_text()):
            if name.split(".")[1] in HARNESS:
                problems.append(f"{path.relative_to(ROOT)}: the collection imports {name}")
    return problems


def test_every_package_is_in_a_layer_and_imports_only_downward() -> None:
    layers = read_layers(DOC.read_text())
    problems = layer_violations(layers)
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_the_collection_never_imports_the_harness() -> None:
    assert not collection_violations()


# The checks above must be able to fail: each rule, broken on purpose in a scratch tree.


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src" / "netmigrate"
    for pkg in ("protocol", "agent", "bench"):
        (src / pkg).mkdir(parents=True)
        (src / pkg / "__init__.py").write_text("")
    (src / "__init__.py").write_text("__version__ = '0'\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", src)
    return src


LAYERS = Layers({"protocol": 1, "agent": 2, "bench": 5})


def test_a_lower_layer_importing_a_higher_one_is_reported(scratch: Path) -> None:
    (scratch / "protocol" / "codec.py").write_text(
        "def f():\n    from netmigrate.agent import app\n"
    )
    (scratch / "agent" / "ok.py").write_text("from ..protocol import codec\nfrom . import ok\n")
    assert layer_violations(LAYERS) == [
        "netmigrate/protocol/codec.py (layer 1) imports netmigrate.agent (layer 2)"
    ]


def test_product_importing_the_harness_or_tests_is_reported(scratch: Path) -> None:
    (scratch / "agent" / "app.py").write_text(
        "import pytest\nfrom netmigrate.bench import runner\nfrom tests.conftest import x\n"
    )
    problems = layer_violations(LAYERS)
    assert "netmigrate/agent/app.py: product code imports the harness: netmigrate.bench" in (
        problems
    )
    assert "netmigrate/agent/app.py: product code imports test code: pytest" in problems
    assert "netmigrate/agent/app.py: product code imports test code: tests" in problems


def test_a_package_missing_from_the_table_is_reported(scratch: Path) -> None:
    (scratch / "gateway").mkdir()
    (scratch / "gateway" / "server.py").write_text("")
    with pytest.raises(AssertionError, match=r"netmigrate\.gateway is in no layer"):
        layer_violations(LAYERS)


def test_the_table_parser_reads_layers_and_refuses_a_package_twice() -> None:
    text = (
        "<!-- layers:begin -->\n| layer | packages |\n| --- | --- |\n"
        "| 1 wire | `protocol` |\n| 2 parts | `agent`, `client` |\n<!-- layers:end -->\n"
    )
    assert read_layers(text).rank == {"protocol": 1, "agent": 2, "client": 2}
    with pytest.raises(AssertionError, match="two layers"):
        read_layers(text.replace("`client`", "`protocol`"))
