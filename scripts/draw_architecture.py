"""Draw docs/img/architecture.png from the code: packages in their layers, arrows for imports.

The layers come from the table in docs/architecture.md and the arrows from the imports the
layer test reads (tests/unit/test_layers.py), so the picture cannot drift from either.
    .venv/bin/python scripts/draw_architecture.py [--out docs/img/architecture.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Horizontal distance between box centres, in box widths of 1.4 (so boxes never overlap).
_SPACING = 1.7


def _layer_test():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("test_layers", ROOT / "tests/unit/test_layers.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["test_layers"] = mod
    spec.loader.exec_module(mod)
    return mod


def package_edges(lt, known: set[str]) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    edges: dict[str, set[str]] = defaultdict(set)
    for path in lt.SRC.rglob("*.py"):
        if "_generated" in path.parts:
            continue
        own = lt.package_of(path)
        for name in lt.imported_netmigrate(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] != own and parts[1] in known:
                edges[own].add(parts[1])
    return edges


def draw(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    lt = _layer_test()
    layers = lt.read_layers(lt.DOC.read_text())
    titles = lt.layer_titles(lt.DOC.read_text())
    rows: dict[int, list[str]] = defaultdict(list)
    for name, layer in sorted(layers.rank.items()):
        rows[layer].append(name)
    edges = package_edges(lt, set(layers.rank))
    pos: dict[str, tuple[float, float]] = {}
    width = max(len(v) for v in rows.values())
    for layer, names in rows.items():
        for i, name in enumerate(names):
            pos[name] = ((i + 0.5) * width / len(names) * _SPACING, layer * 1.6)
    fig, ax = plt.subplots(figsize=(2.2 * width * _SPACING / 1.4 + 2.5, 1.25 * len(rows) + 1))
    for layer in rows:
        ax.text(
            -0.25,
            layer * 1.6,
            titles.get(layer, str(layer)),
            ha="right",
            va="center",
            fontsize=9,
            color="#555",
        )
    for src, dsts in edges.items():
        for dst in dsts:
            if src in pos and dst in pos:
                (x0, y0), (x1, y1) = pos[src], pos[dst]
                ax.annotate(
                    "",
                    xy=(x1, y1 + 0.28),
                    xytext=(x0, y0 - 0.28),
                    arrowprops={
                        "arrowstyle": "->",
                        "color": "#8899aa",
                        "lw": 0.8,
                        "connectionstyle": "arc3,rad=0.08",
                    },
                )
    for name, (x, y) in pos.items():
        box = FancyBboxPatch(
            (x - 0.7, y - 0.26),
            1.4,
            0.52,
            boxstyle="round,pad=0.03",
            fc="#fde9c9" if name in lt.HARNESS else "#dbe8f6",
            ec="#335",
        )
        ax.add_patch(box)
        ax.text(x, y, name, ha="center", va="center", fontsize=10, family="monospace")
    ax.set_xlim(-3.2, width * _SPACING + 0.3)
    ax.set_ylim(min(rows) * 1.6 - 0.6, max(rows) * 1.6 + 0.6)
    ax.axis("off")
    ax.set_title("netmigrate packages by layer (arrows: imports, drawn from the code)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs/img/architecture.png")
    draw(ap.parse_args().out)


if __name__ == "__main__":
    main()
