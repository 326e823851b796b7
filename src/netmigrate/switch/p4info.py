"""The P4Info as the lab switch uses it: loaded once, indexed by id and by name.

The switch serves exactly one pipeline, the one the committed P4Info
(``netmigrate.resources.p4info_path()``) describes. :func:`first_difference` compares a
P4Info a client sends with it and names the first difference, so that a controller holding a
stale or foreign P4Info gets a message that says what is wrong instead of a bare error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from finsy.proto import p4i, p4t
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

MatchType = p4i.MatchField.MatchType
Scope = p4i.ActionRef.Scope

EXACT = MatchType.EXACT
LPM = MatchType.LPM
TERNARY = MatchType.TERNARY
RANGE = MatchType.RANGE
OPTIONAL = MatchType.OPTIONAL
#: Match kinds whose entries need a priority (spec: "TableEntry").
PRIORITY_KINDS = frozenset({TERNARY, RANGE, OPTIONAL})


def load_p4info(path: Path) -> p4i.P4Info:
    """Parse a P4Info text file (``.txtpb``) or, by suffix ``.bin``/``.pb``, a binary one."""
    data = path.read_bytes()
    msg = p4i.P4Info()
    if path.suffix in (".bin", ".pb"):
        msg.ParseFromString(data)
    else:
        text_format.Parse(data.decode("utf-8"), msg)
    return msg


@dataclass(frozen=True, slots=True)
class MatchFieldInfo:
    id: int
    name: str
    bitwidth: int
    match_type: int

    @property
    def kind(self) -> str:
        return MatchType.Name(self.match_type)


@dataclass(frozen=True, slots=True)
class ParamInfo:
    id: int
    name: str
    bitwidth: int


@dataclass(frozen=True, slots=True)
class ActionInfo:
    id: int
    name: str
    alias: str
    params: tuple[ParamInfo, ...]
    params_by_id: dict[int, ParamInfo] = field(compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class ActionRefInfo:
    action: ActionInfo
    scope: int

    @property
    def table_allowed(self) -> bool:
        return self.scope != Scope.DEFAULT_ONLY

    @property
    def default_allowed(self) -> bool:
        return self.scope != Scope.TABLE_ONLY


@dataclass(frozen=True, slots=True)
class TableInfo:
    id: int
    name: str
    alias: str
    match_fields: tuple[MatchFieldInfo, ...]
    fields_by_id: dict[int, MatchFieldInfo]
    actions: dict[int, ActionRefInfo]
    size: int
    const_default_action_id: int
    initial_default_action: p4i.TableActionCall | None
    is_const: bool
    indirect: bool
    direct_resource_ids: tuple[int, ...]

    @property
    def needs_priority(self) -> bool:
        return any(f.match_type in PRIORITY_KINDS for f in self.match_fields)


@dataclass(frozen=True, slots=True)
class CounterInfo:
    id: int
    name: str
    alias: str
    size: int


@dataclass(frozen=True, slots=True)
class RegisterInfo:
    id: int
    name: str
    alias: str
    size: int
    bitwidth: int


@dataclass(frozen=True, slots=True)
class DigestInfo:
    id: int
    name: str
    alias: str
    #: (member name, bit width) in struct order.
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class PacketMetadataInfo:
    id: int
    name: str
    bitwidth: int


def _bitstring_width(spec: p4t.P4DataTypeSpec, what: str) -> int:
    if spec.WhichOneof("type_spec") != "bitstring":
        raise ValueError(f"{what}: only bit<W> types are supported by the lab switch")
    bs = spec.bitstring
    kind = bs.WhichOneof("type_spec")
    if kind == "bit":
        return bs.bit.bitwidth
    raise ValueError(f"{what}: only unsigned bit<W> is supported, not {kind}")


class P4InfoIndex:
    """Id and name lookups over one P4Info. Names include both full names and aliases."""

    def __init__(self, p4info: p4i.P4Info) -> None:
        self.p4info = p4info
        self.actions: dict[int, ActionInfo] = {}
        for a in p4info.actions:
            params = tuple(ParamInfo(p.id, p.name, p.bitwidth) for p in a.params)
            self.actions[a.preamble.id] = ActionInfo(
                a.preamble.id,
                a.preamble.name,
                a.preamble.alias,
                params,
                {p.id: p for p in params},
            )
        self.tables: dict[int, TableInfo] = {}
        for t in p4info.tables:
            fields = tuple(
                MatchFieldInfo(m.id, m.name, m.bitwidth, m.match_type) for m in t.match_fields
            )
            refs = {}
            for ref in t.action_refs:
                if ref.id not in self.actions:
                    raise ValueError(f"table {t.preamble.name}: unknown action id {ref.id}")
                refs[ref.id] = ActionRefInfo(self.actions[ref.id], ref.scope)
            self.tables[t.preamble.id] = TableInfo(
                id=t.preamble.id,
                name=t.preamble.name,
                alias=t.preamble.alias,
                match_fields=fields,
                fields_by_id={f.id: f for f in fields},
                actions=refs,
                size=t.size,
                const_default_action_id=t.const_default_action_id,
                initial_default_action=(
                    t.initial_default_action if t.HasField("initial_default_action") else None
                ),
                is_const=t.is_const_table,
                indirect=t.implementation_id != 0,
                direct_resource_ids=tuple(t.direct_resource_ids),
            )
        self.counters = {
            c.preamble.id: CounterInfo(c.preamble.id, c.preamble.name, c.preamble.alias, c.size)
            for c in p4info.counters
        }
        self.registers = {
            r.preamble.id: RegisterInfo(
                r.preamble.id,
                r.preamble.name,
                r.preamble.alias,
                r.size,
                _bitstring_width(r.type_spec, f"register {r.preamble.name}"),
            )
            for r in p4info.registers
        }
        self.digests: dict[int, DigestInfo] = {}
        for d in p4info.digests:
            self.digests[d.preamble.id] = DigestInfo(
                d.preamble.id, d.preamble.name, d.preamble.alias, self._digest_members(d)
            )
        self.packet_in: tuple[PacketMetadataInfo, ...] = ()
        self.packet_out: tuple[PacketMetadataInfo, ...] = ()
        for cpm in p4info.controller_packet_metadata:
            meta = tuple(PacketMetadataInfo(m.id, m.name, m.bitwidth) for m in cpm.metadata)
            if cpm.preamble.name == "packet_in":
                self.packet_in = meta
            elif cpm.preamble.name == "packet_out":
                self.packet_out = meta
        self.direct_counter_ids = frozenset(c.preamble.id for c in p4info.direct_counters)
        self.direct_meter_ids = frozenset(m.preamble.id for m in p4info.direct_meters)

        self.tables_by_name = _by_names(self.tables.values())
        self.actions_by_name = _by_names(self.actions.values())
        self.counters_by_name = _by_names(self.counters.values())
        self.registers_by_name = _by_names(self.registers.values())
        self.digests_by_name = _by_names(self.digests.values())

    def _digest_members(self, d: p4i.Digest) -> tuple[tuple[str, int], ...]:
        spec = d.type_spec
        what = f"digest {d.preamble.name}"
        kind = spec.WhichOneof("type_spec")
        if kind == "bitstring":
            return (("", _bitstring_width(spec, what)),)
        if kind != "struct":
            raise ValueError(f"{what}: only struct or bit<W> digests are supported")
        struct = self.p4info.type_info.structs.get(spec.struct.name)
        if struct is None:
            raise ValueError(f"{what}: struct {spec.struct.name} missing from type_info")
        return tuple(
            (m.name, _bitstring_width(m.type_spec, f"{what}.{m.name}")) for m in struct.members
        )


def _by_names(objs) -> dict:
    out = {}
    for o in objs:
        out[o.name] = o
        out.setdefault(o.alias, o)
    return out


# ---------------------------------------------------------------------------------------------
# Comparing two P4Infos.

#: Fields that document a P4Info but do not describe the pipeline.
_IGNORED_FIELDS = frozenset({"doc", "annotation_locations", "source_location"})
#: Of pkg_info, only the architecture describes the pipeline; name/version/contact do not.
_PKG_INFO_FIELDS = frozenset({"arch"})


def _element_key(msg: Message) -> str | None:
    """How an element of a repeated field is named in a difference message."""
    fields = msg.DESCRIPTOR.fields_by_name
    if "preamble" in fields:
        return msg.preamble.name  # type: ignore[attr-defined]
    if "name" in fields:
        return msg.name  # type: ignore[attr-defined]
    if "id" in fields:
        return f"id={msg.id}"  # type: ignore[attr-defined]
    return None


def _fmt(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def first_difference(expected: Message, got: Message, path: str = "") -> str | None:
    """A human-readable description of the first way ``got`` differs from ``expected``.

    Repeated entities are matched by preamble name (or name), not position, so a P4Info that
    lists the same tables in another order is the same pipeline. None when they are equal.
    """
    for desc in expected.DESCRIPTOR.fields:
        name = desc.name
        if name in _IGNORED_FIELDS:
            continue
        if path == "pkg_info" and name not in _PKG_INFO_FIELDS:
            continue
        here = f"{path}.{name}" if path else name
        a = getattr(expected, name)
        b = getattr(got, name)
        if desc.is_repeated:
            diff = _repeated_difference(desc, a, b, here)
        elif desc.type == FieldDescriptor.TYPE_MESSAGE:
            has_a, has_b = expected.HasField(name), got.HasField(name)
            if has_a != has_b:
                diff = f"{here} is {'missing' if has_a else 'unexpected'}"
            else:
                diff = first_difference(a, b, here) if has_a else None
        else:
            diff = None if a == b else f"{here} is {_fmt(b)}, expected {_fmt(a)}"
        if diff is not None:
            return diff
    return None


def _repeated_difference(desc: FieldDescriptor, a, b, here: str) -> str | None:
    if desc.type != FieldDescriptor.TYPE_MESSAGE:
        la, lb = list(a), list(b)
        if la != lb:
            return f"{here} is {[_fmt(x) for x in lb]}, expected {[_fmt(x) for x in la]}"
        return None
    if desc.message_type.GetOptions().map_entry:
        keys_a, keys_b = set(a.keys()), set(b.keys())
        for k in sorted(keys_a - keys_b):
            return f"{here}[{k!r}] is missing"
        for k in sorted(keys_b - keys_a):
            return f"{here}[{k!r}] is unexpected"
        for k in sorted(keys_a):
            va, vb = a[k], b[k]
            if isinstance(va, Message):
                diff = first_difference(va, vb, f"{here}[{k!r}]")
            else:
                diff = None if va == vb else f"{here}[{k!r}] is {_fmt(vb)}, expected {_fmt(va)}"
            if diff is not None:
                return diff
        return None
    keyed_a = _keyed(a)
    keyed_b = _keyed(b)
    if keyed_a is None or keyed_b is None:
        if len(a) != len(b):
            return f"{here} has {len(b)} elements, expected {len(a)}"
        for i, (ea, eb) in enumerate(zip(a, b, strict=True)):
            diff = first_difference(ea, eb, f"{here}[{i}]")
            if diff is not None:
                return diff
        return None
    for k in keyed_a:
        if k not in keyed_b:
            return f"{here}[{k!r}] is missing"
    for k in keyed_b:
        if k not in keyed_a:
            return f"{here}[{k!r}] is not part of this pipeline"
    for k, ea in keyed_a.items():
        diff = first_difference(ea, keyed_b[k], f"{here}[{k!r}]")
        if diff is not None:
            return diff
    return None


def _keyed(items) -> dict[str, Message] | None:
    out: dict[str, Message] = {}
    for item in items:
        key = _element_key(item)
        if key is None or key in out:
            return None
        out[key] = item
    return out
