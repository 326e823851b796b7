#!/usr/bin/env python3
"""Generate the Python (and gRPC) stubs of every ``proto/**/*.proto`` with grpcio-tools.

Output goes to ``src/netmigrate/_generated/`` (gitignored, never edited by hand): the proto
path ``netmigrate/agent/v1/control.proto`` becomes the module
``netmigrate._generated.agent.v1.control_pb2`` (+ ``control_pb2_grpc``, ``.pyi``). protoc
writes absolute imports named after the proto path (``from netmigrate.agent.v1 import ...``),
which would resolve into the real ``netmigrate`` package, so imports between generated modules
are rewritten to relative ones.

Idempotent and cheap: a stamp of the inputs (proto files, grpcio-tools and protobuf versions)
skips the work when nothing changed. ``--check`` exits 1 when the stubs are missing or stale.
Run it with the project's virtualenv: ``.venv/bin/python scripts/gen_protos.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "netmigrate" / "_generated"
STAMP = ".stamp"
#: Proto paths under this prefix land directly in ``_generated`` (no second "netmigrate").
STRIP_PREFIX = "netmigrate/"
_IMPORT = re.compile(r"^(from|import) ([\w.]+)( import \w+)?(.*)$", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def inputs_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for dist in ("grpcio-tools", "protobuf"):
        h.update(f"{dist}={metadata.version(dist)}\n".encode())
    h.update(Path(__file__).read_bytes())
    for f in files:
        h.update(str(f.relative_to(PROTO_DIR)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def target_module(proto_module: str) -> str:
    """Dotted module protoc named (``netmigrate.agent.v1.control_pb2``) -> its place under
    ``_generated`` (``agent.v1.control_pb2``)."""
    prefix = STRIP_PREFIX.replace("/", ".")
    return proto_module[len(prefix) :] if proto_module.startswith(prefix) else proto_module


def relative_import(from_module: str, to_module: str) -> tuple[str, str]:
    """(relative package, name) to import ``to_module`` from inside ``from_module``."""
    src = from_module.split(".")[:-1]
    dst = to_module.split(".")
    common = 0
    while common < min(len(src), len(dst) - 1) and src[common] == dst[common]:
        common += 1
    dots = "." * (len(src) - common + 1)
    return dots + ".".join(dst[common:-1]), dst[-1]


def rewrite_imports(text: str, module: str, generated: set[str]) -> str:
    """Turn imports of other generated modules into relative imports."""

    def fix(m: re.Match[str]) -> str:
        kind, name, imported, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        full = f"{name}.{imported.split()[-1]}" if kind == "from" and imported else name
        if full not in generated:
            return m.group(0)
        package, leaf = relative_import(module, target_module(full))
        return f"from {package} import {leaf}{rest}"

    return _IMPORT.sub(fix, text)


def generate(files: list[Path], out_dir: Path) -> None:
    from grpc_tools import protoc  # the build-time dependency, only needed here

    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="nm-protoc-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            *(str(f) for f in files),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("gen_protos: protoc failed (see above)")
        produced = sorted(p for p in raw.rglob("*") if p.is_file())
        generated = {
            ".".join(p.relative_to(raw).with_suffix("").parts)
            for p in produced
            if p.suffix == ".py"
        }
        staged = Path(tmp) / "out"
        staged.mkdir()
        (staged / "__init__.py").write_text('"""Generated protobuf/gRPC stubs: do not edit."""\n')
        for path in produced:
            proto_module = ".".join(path.relative_to(raw).with_suffix("").parts)
            module = target_module(proto_module)
            dest = staged.joinpath(*module.split(".")).with_suffix(path.suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(rewrite_imports(path.read_text(), module, generated))
        for folder in [p for p in staged.rglob("*") if p.is_dir()]:
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text("")
        (staged / STAMP).write_text(inputs_digest(files) + "\n")
        # Swap in the whole tree at once so that no reader sees a half-written package.
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out_dir.exists():
            out_dir.rename(old)
        shutil.copytree(staged, out_dir)
        shutil.rmtree(old, ignore_errors=True)


def up_to_date(files: list[Path]) -> bool:
    stamp = OUT_DIR / STAMP
    return stamp.is_file() and stamp.read_text().strip() == inputs_digest(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if stubs are stale")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    files = proto_files()
    if not files:
        print(f"gen_protos: no .proto files under {PROTO_DIR}", file=sys.stderr)
        return 1
    if args.check:
        if up_to_date(files):
            return 0
        print("gen_protos: generated stubs are missing or stale", file=sys.stderr)
        return 1
    if not args.force and up_to_date(files):
        return 0
    generate(files, OUT_DIR)
    print(f"gen_protos: generated {len(files)} proto file(s) into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
