"""Ensure table entries are present or absent, with a diff of what changed.

Entries are written as :class:`TableEntrySpec` (P4Info names, finsy value formats: ints,
``"10.0.0.0/24"``, MAC and IP strings). The helper reads what the switch has for the tables
involved, compares by value (so a switch that encodes bytestrings differently still compares
equal), and writes only the difference, in one batch. Check mode computes the same result
without writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import finsy as fy
from finsy.proto import p4r

from netmigrate.p4rt.errors import P4RuntimeError
from netmigrate.p4rt.session import P4RTSession

Update = p4r.Update


@dataclass(frozen=True)
class TableEntrySpec:
    table: str
    match: Mapping[str, Any] = field(default_factory=dict)
    action: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    #: The table's default entry (no match; MODIFY only).
    default: bool = False

    def finsy_entry(self) -> fy.P4TableEntry:
        return fy.P4TableEntry(
            self.table,
            match=fy.P4TableMatch(dict(self.match)) if self.match else None,
            action=fy.P4TableAction(self.action, **dict(self.params)) if self.action else None,
            priority=self.priority,
            is_default_action=self.default,
        )

    def encode(self, session: P4RTSession) -> p4r.TableEntry:
        try:
            return self.finsy_entry().encode(session.schema).table_entry
        except (ValueError, KeyError, TypeError) as exc:
            raise P4RuntimeError(
                f"table entry for {self.table}: {exc}", code="INVALID_ARGUMENT"
            ) from None


def _match_key(fm: p4r.FieldMatch) -> tuple:
    kind = fm.WhichOneof("field_match_type")
    v = int.from_bytes
    if kind == "exact":
        return (fm.field_id, kind, v(fm.exact.value, "big"))
    if kind == "lpm":
        return (fm.field_id, kind, v(fm.lpm.value, "big"), fm.lpm.prefix_len)
    if kind == "ternary":
        return (fm.field_id, kind, v(fm.ternary.value, "big"), v(fm.ternary.mask, "big"))
    if kind == "range":
        return (fm.field_id, kind, v(fm.range.low, "big"), v(fm.range.high, "big"))
    if kind == "optional":
        return (fm.field_id, kind, v(fm.optional.value, "big"))
    return (fm.field_id, kind, fm.SerializeToString(deterministic=True))


def entry_key(te: p4r.TableEntry) -> tuple:
    """What identifies an entry: table, match (by value), priority, default flag."""
    if te.is_default_action:
        return (te.table_id, True)
    return (te.table_id, False, tuple(sorted(_match_key(m) for m in te.match)), te.priority)


def entry_value(te: p4r.TableEntry) -> tuple:
    """What an entry does: its action and parameter values."""
    if not te.HasField("action") or te.action.WhichOneof("type") != "action":
        return ()
    a = te.action.action
    return (
        a.action_id,
        tuple(sorted((p.param_id, int.from_bytes(p.value, "big")) for p in a.params)),
    )


def describe(session: P4RTSession, te: p4r.TableEntry) -> dict[str, Any]:
    """A JSON-friendly view of an entry with P4Info names (for diffs and facts)."""
    schema = session.schema
    table = schema.tables[te.table_id]
    match: dict[str, Any] = {}
    for fm in te.match:
        key = _match_key(fm)
        name = table.match_fields[fm.field_id].name
        match[name] = key[2] if len(key) == 3 else list(key[2:])
    out: dict[str, Any] = {"table": table.name}
    if te.is_default_action:
        out["default"] = True
    else:
        out["match"] = match
        if te.priority:
            out["priority"] = te.priority
    if te.HasField("action") and te.action.WhichOneof("type") == "action":
        action = schema.actions[te.action.action.action_id]
        out["action"] = action.name
        out["params"] = {
            action.params[p.param_id].name: int.from_bytes(p.value, "big")
            for p in te.action.action.params
        }
    return out


async def read_table_entries(
    session: P4RTSession, tables: Iterable[str] = (), *, defaults: bool = False
) -> list[p4r.TableEntry]:
    """Every entry of ``tables`` (all tables when empty); with ``defaults`` their defaults."""
    schema = session.schema
    ids = [schema.tables[t].id for t in tables] or [0]
    requests = [p4r.Entity(table_entry=p4r.TableEntry(table_id=i)) for i in ids]
    if defaults:
        table_ids = ids if ids != [0] else [t.id for t in schema.tables]
        requests += [
            p4r.Entity(table_entry=p4r.TableEntry(table_id=i, is_default_action=True))
            for i in table_ids
        ]
    return [e.table_entry for e in await session.read(requests)]


@dataclass(slots=True)
class EntriesResult:
    changed: bool = False
    inserted: list[dict[str, Any]] = field(default_factory=list)
    modified: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    #: For Ansible's diff mode: the involved entries before and after.
    before: list[dict[str, Any]] = field(default_factory=list)
    after: list[dict[str, Any]] = field(default_factory=list)


async def ensure_table_entries(
    session: P4RTSession,
    specs: Sequence[TableEntrySpec],
    *,
    present: bool = True,
    purge: bool = False,
    check_mode: bool = False,
) -> EntriesResult:
    """Make ``specs`` present (or absent) on the switch; write only the difference.

    ``purge`` (with ``present``): also delete the other entries of the tables named in
    ``specs``, so they hold exactly ``specs``. Default entries can only be present (set).
    """
    wants = [s.encode(session) for s in specs]
    if not present and any(s.default for s in specs):
        raise P4RuntimeError(
            "a default entry cannot be absent: set it to the action wanted", code="INVALID_ARGUMENT"
        )
    tables = sorted({s.table for s in specs})
    have_list = await read_table_entries(session, tables, defaults=any(s.default for s in specs))
    have = {entry_key(te): te for te in have_list}
    result = EntriesResult()
    updates: list[p4r.Update] = []
    wanted_keys = set()
    for want in wants:
        key = entry_key(want)
        if key in wanted_keys:
            raise P4RuntimeError(
                f"the same entry is given twice: {describe(session, want)}",
                code="INVALID_ARGUMENT",
            )
        wanted_keys.add(key)
        current = have.get(key)
        if present:
            if current is None and not want.is_default_action:
                updates.append(Update(type=Update.INSERT, entity=p4r.Entity(table_entry=want)))
                result.inserted.append(describe(session, want))
                result.after.append(describe(session, want))
            elif current is None or entry_value(current) != entry_value(want):
                updates.append(Update(type=Update.MODIFY, entity=p4r.Entity(table_entry=want)))
                result.modified.append(describe(session, want))
                if current is not None:
                    result.before.append(describe(session, current))
                result.after.append(describe(session, want))
            else:
                result.unchanged += 1
        elif current is not None:
            updates.append(Update(type=Update.DELETE, entity=p4r.Entity(table_entry=current)))
            result.deleted.append(describe(session, current))
            result.before.append(describe(session, current))
        else:
            result.unchanged += 1
    if present and purge:
        for key, current in have.items():
            if key not in wanted_keys and not current.is_default_action:
                updates.append(Update(type=Update.DELETE, entity=p4r.Entity(table_entry=current)))
                result.deleted.append(describe(session, current))
                result.before.append(describe(session, current))
    result.changed = bool(updates)
    if updates and not check_mode:
        await session.write(updates)
    return result
