"""A purpose-built reader of the NetMigrate P4 sources, and their comparison with a P4Info.

It understands exactly the declarations the program uses — consts, typedefs, headers, structs,
serializable enums, controls with their parameter lists, and inside controls: registers,
counters, actions, tables — plus ``digest<T>(...)`` calls and ``@controller_header`` headers.
It is not a P4 parser: on anything it does not expect it raises, so a change of style in the
program fails the test loudly instead of being skipped.

:func:`compare` lists every difference between the program's control-plane objects (names, ids,
match fields with widths and kinds, action parameters with widths, sizes, scopes, defaults,
counter units, register widths, digest members, controller metadata) and a P4Info message, in
the form p4c's P4Runtime serializer would produce them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from finsy.proto import p4i

_ANN = r"@\w+(?:\((?:[^()]|\([^()]*\))*\))?"
_ANNS = rf"((?:{_ANN}\s*)*)"
#: The preprocessor lines the sources may use: architecture includes and include guards.
_PREPROCESSOR_OK = r"#(include\s+<(core|v1model)\.p4>|(ifndef|define|endif)\b.*)"

#: v1model's standard_metadata fields a table key may use (p4include/v1model.p4).
STANDARD_METADATA_WIDTHS = {
    "ingress_port": 9,
    "egress_spec": 9,
    "egress_port": 9,
    "instance_type": 32,
    "packet_length": 32,
}
#: P4Runtime id prefixes (p4info.proto P4Ids.Prefix).
PREFIX = {
    "tables": 0x02,
    "actions": 0x01,
    "counters": 0x12,
    "registers": 0x16,
    "digests": 0x17,
    "controller_packet_metadata": 0x04,
}
MATCH_KINDS = {
    "exact": p4i.MatchField.EXACT,
    "lpm": p4i.MatchField.LPM,
    "ternary": p4i.MatchField.TERNARY,
    "range": p4i.MatchField.RANGE,
    "optional": p4i.MatchField.OPTIONAL,
}
COUNTER_UNITS = {
    "packets": p4i.CounterSpec.PACKETS,
    "bytes": p4i.CounterSpec.BYTES,
    "packets_and_bytes": p4i.CounterSpec.BOTH,
}


class P4SourceError(ValueError):
    """The P4 sources contain something this reader does not understand."""


# --- Records ------------------------------------------------------------------------------------


@dataclass
class Param:
    name: str
    width: int


@dataclass
class Action:
    name: str  # fully qualified: Control.action
    id: int | None
    params: list[Param]


@dataclass
class KeyField:
    name: str
    width: int
    kind: str


@dataclass
class Table:
    name: str
    id: int | None
    keys: list[KeyField]
    actions: list[tuple[str, bool]]  # (qualified action name, @defaultonly)
    default_action: str
    size: int


@dataclass
class Extern:
    name: str
    id: int | None
    size: int
    detail: str  # counter: CounterType member; register: element width


@dataclass
class ControllerHeader:
    name: str  # from @controller_header("...")
    id: int | None
    annotation: str
    fields: list[Param]


@dataclass
class Program:
    consts: dict[str, int] = field(default_factory=dict)
    typedefs: dict[str, int] = field(default_factory=dict)
    headers: dict[str, list[Param]] = field(default_factory=dict)
    structs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> (type, f)
    tables: dict[str, Table] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    counters: dict[str, Extern] = field(default_factory=dict)
    registers: dict[str, Extern] = field(default_factory=dict)
    digests: dict[str, list[Param]] = field(default_factory=dict)
    controller_headers: dict[str, ControllerHeader] = field(default_factory=dict)

    def width_of(self, type_text: str) -> int:
        t = type_text.strip()
        m = re.fullmatch(r"bit\s*<\s*(\w+)\s*>", t)
        if m:
            return self.value_of(m.group(1))
        if t in self.typedefs:
            return self.typedefs[t]
        raise P4SourceError(f"type {t!r} is not a bit<W> or a typedef of one")

    def value_of(self, text: str) -> int:
        t = text.strip()
        if t in self.consts:
            return self.consts[t]
        m = re.fullmatch(r"(?:\d+[ws])?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*)", t)
        if not m:
            raise P4SourceError(f"cannot evaluate {t!r}")
        return int(m.group(1).replace("_", ""), 0)


# --- Reading ------------------------------------------------------------------------------------


def read_sources(main: Path) -> str:
    """``main`` with its quoted includes inlined, comments and preprocessor lines removed."""
    seen: set[Path] = set()

    def inline(path: Path) -> str:
        path = path.resolve()
        if path in seen:
            return ""
        seen.add(path)
        out = []
        for line in _strip_comments(path.read_text()).splitlines():
            s = line.strip()
            m = re.fullmatch(r'#include\s+"([^"]+)"', s)
            if m:
                out.append(inline(path.parent / m.group(1)))
            elif s.startswith("#"):
                if not re.fullmatch(
                    r"#(include\s+<(core|v1model)\.p4>|(ifndef|define|endif)\b.*)", s
                ):
                    raise P4SourceError(f"{path.name}: unexpected preprocessor line {s!r}")
            else:
                out.append(line)
        return "\n".join(out)

    return inline(main)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _block(text: str, open_at: int) -> tuple[str, int]:
    """The text inside the braces opening at ``open_at`` and the index after the closing one."""
    if text[open_at] != "{":
        raise P4SourceError(f"expected '{{' at {text[open_at : open_at + 30]!r}")
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i], i + 1
    raise P4SourceError("unbalanced braces")


def _annotation(anns: str, name: str) -> str | None:
    m = re.search(rf"@{name}\s*\(((?:[^()]|\([^()]*\))*)\)", anns)
    return m.group(1).strip() if m else None


def _fields(prog: Program, body: str) -> list[tuple[str, str]]:
    out = []
    for decl in body.split(";"):
        decl = re.sub(_ANN, "", decl).strip()
        if not decl:
            continue
        m = re.fullmatch(r"(.+?)\s+(\w+)", decl, flags=re.S)
        if not m:
            raise P4SourceError(f"cannot read field declaration {decl!r}")
        out.append((re.sub(r"\s+", "", m.group(1)), m.group(2)))
    return out


def load_program(main: Path) -> Program:
    src = read_sources(main)
    prog = Program()
    for m in re.finditer(r"\bconst\s+bit\s*<\s*(\w+)\s*>\s+(\w+)\s*=\s*([^;]+);", src):
        prog.consts[m.group(2)] = prog.value_of(m.group(3))
    for m in re.finditer(r"\btypedef\s+bit\s*<\s*(\w+)\s*>\s+(\w+)\s*;", src):
        prog.typedefs[m.group(2)] = prog.value_of(m.group(1))
    for m in re.finditer(rf"{_ANNS}\bheader\s+(\w+)\s*\{{", src):
        anns, name = m.group(1), m.group(2)
        body, _ = _block(src, m.end() - 1)
        fields = [Param(f, prog.width_of(t)) for t, f in _fields(prog, body)]
        prog.headers[name] = fields
        ctl = _annotation(anns, "controller_header")
        if ctl is not None:
            ident = _annotation(anns, "id")
            prog.controller_headers[ctl.strip('"')] = ControllerHeader(
                ctl.strip('"'),
                prog.value_of(ident) if ident else None,
                f"@controller_header({ctl})",
                fields,
            )
    for m in re.finditer(r"\bstruct\s+(\w+)\s*\{", src):
        body, _ = _block(src, m.end() - 1)
        prog.structs[m.group(1)] = _fields(prog, body)
    for m in re.finditer(r"\bcontrol\s+(\w+)\s*\(([^)]*)\)\s*\{", src):
        body, _ = _block(src, m.end() - 1)
        params = {}
        for p in m.group(2).split(","):
            words = p.split()
            params[words[-1]] = words[-2]
        _read_control(prog, m.group(1), params, body)
    for m in re.finditer(r"\bdigest\s*<\s*(\w+)\s*>\s*\(", src):
        struct = m.group(1)
        prog.digests[struct] = [Param(f, prog.width_of(t)) for t, f in prog.structs[struct]]
    return prog


def _read_control(prog: Program, control: str, params: dict[str, str], body: str) -> None:
    apply_at = re.search(r"\bapply\s*\{", body)
    if apply_at is None:
        raise P4SourceError(f"control {control} has no apply block")
    locals_ = body[: apply_at.start()]
    for m in re.finditer(
        rf"{_ANNS}\bregister\s*<\s*(.+?)\s*>\s*\(\s*(\w+)\s*\)\s*(\w+)\s*;", locals_
    ):
        name = f"{control}.{m.group(4)}"
        prog.registers[name] = Extern(
            name, _id(prog, m.group(1)), prog.value_of(m.group(3)), str(prog.width_of(m.group(2)))
        )
    for m in re.finditer(
        rf"{_ANNS}\bcounter\s*\(\s*(\w+)\s*,\s*CounterType\.(\w+)\s*\)\s*(\w+)\s*;", locals_
    ):
        name = f"{control}.{m.group(4)}"
        prog.counters[name] = Extern(
            name, _id(prog, m.group(1)), prog.value_of(m.group(2)), m.group(3)
        )
    for m in re.finditer(rf"{_ANNS}\baction\s+(\w+)\s*\(([^)]*)\)\s*\{{", locals_):
        name = f"{control}.{m.group(2)}"
        action_params = []
        for p in filter(None, (p.strip() for p in m.group(3).split(","))):
            t, n = p.rsplit(None, 1)
            action_params.append(Param(n, prog.width_of(t)))
        prog.actions[name] = Action(name, _id(prog, m.group(1)), action_params)
    for m in re.finditer(rf"{_ANNS}\btable\s+(\w+)\s*\{{", locals_):
        tbody, _ = _block(locals_, m.end() - 1)
        prog.tables[f"{control}.{m.group(2)}"] = _read_table(
            prog, control, params, m.group(2), _id(prog, m.group(1)), tbody
        )


def _id(prog: Program, anns: str) -> int | None:
    value = _annotation(anns, "id")
    return prog.value_of(value) if value is not None else None


def _read_table(
    prog: Program, control: str, params: dict[str, str], name: str, ident: int | None, body: str
) -> Table:
    props: dict[str, str] = {}
    rest = body
    while rest.strip():
        m = re.match(r"\s*(\w+)\s*=\s*", rest)
        if not m:
            raise P4SourceError(f"table {name}: cannot read {rest.strip()[:40]!r}")
        key, at = m.group(1), m.end()
        if rest[at] == "{":
            value, end = _block(rest, at)
        else:
            semi = rest.index(";", at)
            value, end = rest[at:semi], semi + 1
        props[key] = value.strip()
        rest = rest[end:]
    unknown = set(props) - {"key", "actions", "default_action", "size"}
    if unknown:
        raise P4SourceError(f"table {name}: unsupported properties {sorted(unknown)}")
    keys = []
    for elem in filter(None, (e.strip() for e in props.get("key", "").split(";"))):
        expr, kind = (s.strip() for s in elem.rsplit(":", 1))
        keys.append(KeyField(re.sub(r"\s+", "", expr), _key_width(prog, params, expr), kind))
    actions = []
    for ref in filter(None, (a.strip() for a in props["actions"].split(";"))):
        default_only = "@defaultonly" in ref
        action = re.sub(_ANN, "", ref).strip()
        actions.append((f"{control}.{action}", default_only))
    default = re.fullmatch(r"(\w+)\s*\(\s*\)", props["default_action"])
    if not default:
        raise P4SourceError(f"table {name}: default_action must be a call without arguments")
    size = prog.value_of(props["size"]) if "size" in props else 1024  # p4c's default size
    return Table(f"{control}.{name}", ident, keys, actions, f"{control}.{default.group(1)}", size)


def _key_width(prog: Program, params: dict[str, str], expr: str) -> int:
    parts = [p.strip() for p in expr.split(".")]
    type_name = params.get(parts[0])
    if type_name is None:
        raise P4SourceError(f"key {expr!r}: {parts[0]} is not a control parameter")
    if type_name == "standard_metadata_t":
        return STANDARD_METADATA_WIDTHS[parts[1]]
    for part in parts[1:]:
        if type_name in prog.structs:
            members = dict((f, t) for t, f in prog.structs[type_name])
            type_name = members[part]
        elif type_name in prog.headers:
            return next(f.width for f in prog.headers[type_name] if f.name == part)
        else:
            raise P4SourceError(f"key {expr!r}: cannot resolve {part}")
    return prog.width_of(type_name)


# --- What p4c would emit, and the comparison ----------------------------------------------------


def jenkins_one_at_a_time(name: str) -> int:
    """The name hash p4c uses for ids it assigns itself (control-plane/p4RuntimeSymbolTable)."""
    h = 0
    for byte in name.encode():
        h = (h + byte) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    return (h + (h << 15)) & 0xFFFFFFFF


def shortest_unique_suffix(name: str, names: list[str]) -> str:
    parts = name.split(".")
    for n in range(1, len(parts) + 1):
        suffix = parts[-n:]
        if sum(1 for other in names if other.split(".")[-n:] == suffix) < 2:
            return ".".join(suffix)
    return name


def _expected_id(kind: str, ident: int | None, name: str) -> int | None:
    if ident is None:
        return None
    prefix = PREFIX[kind] << 24
    return ident | prefix if ident >> 24 in (0, PREFIX[kind]) else -1


def compare(prog: Program, info: p4i.P4Info) -> list[str]:
    """Every difference between the program's control-plane objects and ``info``."""
    problems: list[str] = []
    all_names = [
        *prog.tables,
        *prog.actions,
        *prog.counters,
        *prog.registers,
        *prog.digests,
        *prog.controller_headers,
    ]

    def check_preamble(kind: str, name: str, pre: p4i.Preamble, ident: int | None) -> None:
        if ident is None:
            problems.append(f"{kind} {name}: no @id in the program")
        elif pre.id != _expected_id(kind, ident, name):
            problems.append(f"{kind} {name}: id {pre.id:#x} != @id {ident:#x}")
        alias = (
            name
            if kind == "controller_packet_metadata"
            else shortest_unique_suffix(name, all_names)
        )
        if pre.alias != alias:
            problems.append(f"{kind} {name}: alias {pre.alias!r}, p4c would give {alias!r}")

    def match_sets(kind: str, mine: dict, theirs: dict) -> list[str]:
        for missing in sorted(set(mine) - set(theirs)):
            problems.append(f"{kind} {missing}: in the program, not in the P4Info")
        for extra in sorted(set(theirs) - set(mine)):
            problems.append(f"{kind} {extra}: in the P4Info, not in the program")
        return sorted(set(mine) & set(theirs))

    action_names = {a.preamble.id: a.preamble.name for a in info.actions}

    # Actions.
    infos = {a.preamble.name: a for a in info.actions}
    for name in match_sets("action", prog.actions, infos):
        mine, a = prog.actions[name], infos[name]
        check_preamble("actions", name, a.preamble, mine.id)
        got = [(p.id, p.name, p.bitwidth) for p in a.params]
        want = [(i, p.name, p.width) for i, p in enumerate(mine.params, 1)]
        if got != want:
            problems.append(f"action {name}: params {got} != program's {want}")

    # Tables.
    infos = {t.preamble.name: t for t in info.tables}
    for name in match_sets("table", prog.tables, infos):
        mine, t = prog.tables[name], infos[name]
        check_preamble("tables", name, t.preamble, mine.id)
        got = [(m.id, m.name, m.bitwidth, m.match_type) for m in t.match_fields]
        want = [(i, k.name, k.width, MATCH_KINDS[k.kind]) for i, k in enumerate(mine.keys, 1)]
        if got != want:
            problems.append(f"table {name}: match fields {got} != program's {want}")
        got_refs = [
            (
                action_names.get(r.id, f"#{r.id}"),
                r.scope == p4i.ActionRef.DEFAULT_ONLY,
                list(r.annotations),
            )
            for r in t.action_refs
        ]
        want_refs = [(a, d, ["@defaultonly"] if d else []) for a, d in mine.actions]
        if got_refs != want_refs:
            problems.append(f"table {name}: action refs {got_refs} != program's {want_refs}")
        default = action_names.get(t.initial_default_action.action_id)
        if default != mine.default_action:
            problems.append(f"table {name}: initial default {default} != {mine.default_action}")
        if t.const_default_action_id:
            problems.append(f"table {name}: const default action, the program has none")
        if t.size != mine.size:
            problems.append(f"table {name}: size {t.size} != program's {mine.size}")

    # Counters.
    infos = {c.preamble.name: c for c in info.counters}
    for name in match_sets("counter", prog.counters, infos):
        mine, c = prog.counters[name], infos[name]
        check_preamble("counters", name, c.preamble, mine.id)
        if c.size != mine.size:
            problems.append(f"counter {name}: size {c.size} != program's {mine.size}")
        if c.spec.unit != COUNTER_UNITS[mine.detail]:
            problems.append(f"counter {name}: unit {c.spec.unit} != CounterType.{mine.detail}")

    # Registers.
    infos = {r.preamble.name: r for r in info.registers}
    for name in match_sets("register", prog.registers, infos):
        mine, r = prog.registers[name], infos[name]
        check_preamble("registers", name, r.preamble, mine.id)
        if r.size != mine.size:
            problems.append(f"register {name}: size {r.size} != program's {mine.size}")
        width = r.type_spec.bitstring.bit.bitwidth
        if str(width) != mine.detail:
            problems.append(f"register {name}: bit<{width}> != program's bit<{mine.detail}>")

    # Digests: v1model takes the name from the struct and derives the id from that name.
    infos = {d.preamble.name: d for d in info.digests}
    for name in match_sets("digest", prog.digests, infos):
        d = infos[name]
        expected = (PREFIX["digests"] << 24) | (jenkins_one_at_a_time(name) & 0xFFFFFF)
        if d.preamble.id != expected:
            problems.append(f"digest {name}: id {d.preamble.id:#x}, p4c assigns {expected:#x}")
        if d.preamble.alias != shortest_unique_suffix(name, all_names):
            problems.append(f"digest {name}: alias {d.preamble.alias!r}")
        if d.type_spec.struct.name != name:
            problems.append(f"digest {name}: type_spec names {d.type_spec.struct.name!r}")
        struct = info.type_info.structs.get(name)
        got = (
            [(m.name, m.type_spec.bitstring.bit.bitwidth) for m in struct.members]
            if struct is not None
            else None
        )
        want = [(p.name, p.width) for p in prog.digests[name]]
        if got != want:
            problems.append(f"digest {name}: type_info members {got} != program's {want}")

    # Controller headers.
    infos = {h.preamble.name: h for h in info.controller_packet_metadata}
    for name in match_sets("controller header", prog.controller_headers, infos):
        mine, h = prog.controller_headers[name], infos[name]
        check_preamble("controller_packet_metadata", name, h.preamble, mine.id)
        if list(h.preamble.annotations) != [mine.annotation]:
            problems.append(f"controller header {name}: annotations {list(h.preamble.annotations)}")
        got = [(m.id, m.name, m.bitwidth) for m in h.metadata]
        want = [(i, f.name, f.width) for i, f in enumerate(mine.fields, 1)]
        if got != want:
            problems.append(f"controller header {name}: metadata {got} != program's {want}")

    # Kinds of object the program does not have must be absent.
    for kind in (
        "action_profiles",
        "direct_counters",
        "meters",
        "direct_meters",
        "value_sets",
        "externs",
    ):
        if len(getattr(info, kind)):
            problems.append(f"P4Info has {kind}, the program declares none")
    if info.pkg_info.arch != "v1model":
        problems.append(f"pkg_info.arch {info.pkg_info.arch!r} != 'v1model'")
    return problems
