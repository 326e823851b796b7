"""P4Runtime entities in and out of the :class:`SwitchState`: validation, writes and reads.

Each write returns an undo function, so the server can roll a batch back
(``ROLLBACK_ON_ERROR`` / ``DATAPLANE_ATOMIC``). Every check raises a
:class:`~netmigrate.switch.errors.P4RTError` with the code the P4Runtime specification names,
before anything is changed: a rejected update leaves the state as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from finsy.proto import p4d, p4r

from netmigrate.switch.bytestrings import decode_uint, encode_uint
from netmigrate.switch.digests import DigestConfig
from netmigrate.switch.errors import (
    already_exists,
    invalid,
    not_found,
    out_of_range,
    permission_denied,
    unimplemented,
)
from netmigrate.switch.interfaces import ActionCall
from netmigrate.switch.p4info import (
    EXACT,
    LPM,
    OPTIONAL,
    RANGE,
    TERNARY,
    ActionInfo,
    TableInfo,
)
from netmigrate.switch.state import (
    CloneSession,
    MulticastGroup,
    Replica,
    SwitchState,
    UndoFn,
)
from netmigrate.switch.tables import Entry, MatchKey, Table

Update = p4r.Update

#: Largest port number a replica may name (v1model ports are 9 bits).
MAX_PORT = (1 << 9) - 1
#: v1model's egress instance is 16 bits.
MAX_INSTANCE = (1 << 16) - 1


def _noop() -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Writes


def write_update(state: SwitchState, update: p4r.Update) -> UndoFn:
    """Apply one update; returns how to undo it. Raises P4RTError and changes nothing."""
    if update.type == Update.UNSPECIFIED:
        raise invalid("update type is UNSPECIFIED")
    kind = update.entity.WhichOneof("entity")
    entity = update.entity
    if kind == "table_entry":
        return _write_table_entry(state, update.type, entity.table_entry)
    if kind == "counter_entry":
        return _write_counter(state, update.type, entity.counter_entry)
    if kind == "register_entry":
        return _write_register(state, update.type, entity.register_entry)
    if kind == "packet_replication_engine_entry":
        pre = entity.packet_replication_engine_entry
        which = pre.WhichOneof("type")
        if which == "clone_session_entry":
            return _write_clone_session(state, update.type, pre.clone_session_entry)
        if which == "multicast_group_entry":
            return _write_multicast_group(state, update.type, pre.multicast_group_entry)
        raise invalid("PacketReplicationEngineEntry without an entry")
    if kind == "digest_entry":
        return _write_digest(state, update.type, entity.digest_entry)
    if kind is None:
        raise invalid("entity is not set")
    raise unimplemented(f"{kind} is not supported by the lab switch")


def _table_info(state: SwitchState, table_id: int) -> Table:
    if table_id == 0:
        raise invalid("table_id 0 is not a valid table")
    table = state.tables.get(table_id)
    if table is None:
        raise invalid(f"unknown table id {table_id}")
    return table


def parse_match(info: TableInfo, matches, *, what: str) -> MatchKey:
    """Validate ``FieldMatch`` messages into the canonical :data:`MatchKey`."""
    given: dict[int, Any] = {}
    for fm in matches:
        field = info.fields_by_id.get(fm.field_id)
        if field is None:
            raise invalid(f"{what}: unknown match field id {fm.field_id}")
        if fm.field_id in given:
            raise invalid(f"{what}: match field {field.name} given twice")
        kind = fm.WhichOneof("field_match_type")
        label = f"{what}: match field {field.name}"
        width = field.bitwidth
        if field.match_type == EXACT:
            if kind != "exact":
                raise invalid(f"{label} is EXACT, got {kind}")
            given[fm.field_id] = decode_uint(fm.exact.value, width, label)
        elif field.match_type == LPM:
            if kind != "lpm":
                raise invalid(f"{label} is LPM, got {kind}")
            value = decode_uint(fm.lpm.value, width, label)
            plen = fm.lpm.prefix_len
            if not 0 < plen <= width:
                raise invalid(
                    f"{label}: prefix_len {plen} out of 1..{width} (omit the field for /0)"
                )
            if value & ((1 << (width - plen)) - 1):
                raise invalid(f"{label}: value has bits set beyond the /{plen} prefix")
            given[fm.field_id] = (value, plen)
        elif field.match_type == TERNARY:
            if kind != "ternary":
                raise invalid(f"{label} is TERNARY, got {kind}")
            value = decode_uint(fm.ternary.value, width, label)
            mask = decode_uint(fm.ternary.mask, width, label + " mask")
            if mask == 0:
                raise invalid(f"{label}: mask 0 is a don't-care match (omit the field)")
            if value & ~mask:
                raise invalid(f"{label}: value has bits set outside the mask")
            given[fm.field_id] = (value, mask)
        elif field.match_type == RANGE:
            if kind != "range":
                raise invalid(f"{label} is RANGE, got {kind}")
            low = decode_uint(fm.range.low, width, label + " low")
            high = decode_uint(fm.range.high, width, label + " high")
            if low > high:
                raise invalid(f"{label}: low {low} > high {high}")
            if (low, high) == (0, (1 << width) - 1):
                raise invalid(f"{label}: the full range is a don't-care match (omit the field)")
            given[fm.field_id] = (low, high)
        elif field.match_type == OPTIONAL:
            if kind != "optional":
                raise invalid(f"{label} is OPTIONAL, got {kind}")
            given[fm.field_id] = decode_uint(fm.optional.value, width, label)
        else:
            raise unimplemented(f"{label}: match type {field.match_type} is not supported")
    key = []
    for field in info.match_fields:
        if field.id in given:
            key.append(given[field.id])
        elif field.match_type == EXACT:
            raise invalid(f"{what}: EXACT match field {field.name} is missing")
        elif field.match_type in (LPM, TERNARY):
            key.append((0, 0))
        elif field.match_type == RANGE:
            key.append((0, (1 << field.bitwidth) - 1))
        else:
            key.append(None)
    return tuple(key)


def parse_action(
    info: TableInfo, action: p4r.Action, *, default: bool, what: str
) -> tuple[ActionInfo, tuple[int, ...], dict[str, int]]:
    ref = info.actions.get(action.action_id)
    if ref is None:
        raise invalid(f"{what}: action id {action.action_id} is not an action of {info.name}")
    if default and not ref.default_allowed:
        raise permission_denied(f"{what}: {ref.action.name} is @tableonly")
    if not default and not ref.table_allowed:
        raise permission_denied(
            f"{what}: {ref.action.name} is @defaultonly and cannot be used in an entry"
        )
    act = ref.action
    values: dict[int, int] = {}
    for p in action.params:
        param = act.params_by_id.get(p.param_id)
        if param is None:
            raise invalid(f"{what}: {act.name} has no parameter id {p.param_id}")
        if p.param_id in values:
            raise invalid(f"{what}: {act.name} parameter {param.name} given twice")
        values[p.param_id] = decode_uint(
            p.value, param.bitwidth, f"{what}: {act.name} parameter {param.name}"
        )
    missing = [p.name for p in act.params if p.id not in values]
    if missing:
        raise invalid(f"{what}: {act.name} parameters missing: {', '.join(missing)}")
    params = tuple(values[p.id] for p in act.params)
    return act, params, {p.name: values[p.id] for p in act.params}


def _check_direct(info: TableInfo, te: p4r.TableEntry, what: str) -> None:
    if te.HasField("meter_config") or te.HasField("meter_counter_data"):
        raise invalid(f"{what}: {info.name} has no direct meter")
    if te.HasField("counter_data"):
        raise invalid(f"{what}: {info.name} has no direct counter")
    if te.idle_timeout_ns:
        raise invalid(f"{what}: {info.name} does not support idle timeout")


def _write_table_entry(state: SwitchState, utype: int, te: p4r.TableEntry) -> UndoFn:
    table = _table_info(state, te.table_id)
    info = table.info
    what = info.name
    if te.is_const:
        raise invalid(f"{what}: is_const must be false in a write")
    if info.indirect:
        raise unimplemented(f"{what}: indirect (action profile) tables are not supported")
    if te.is_default_action:
        return _write_default(table, utype, te)
    if info.is_const:
        raise permission_denied(f"{what} is a const table")
    if not info.match_fields and utype == Update.INSERT:
        raise invalid(f"{what} is keyless: only its default entry can be written")
    if info.needs_priority:
        if te.priority <= 0:
            raise invalid(f"{what}: entries need a priority > 0 (ternary/range/optional key)")
    elif te.priority != 0:
        raise invalid(f"{what}: priority must be 0 (no ternary/range/optional match field)")
    match = parse_match(info, te.match, what=what)
    key = (match, te.priority)
    if utype == Update.DELETE:
        old = table.delete(key)
        return lambda: table.insert(old)
    old_entry = table.entries.get(key)
    if utype == Update.MODIFY and not te.HasField("action"):
        if old_entry is None:
            raise not_found(f"{what}: no entry with this match key")
        _check_direct(info, te, what)
        return _noop  # nothing else to change: a no-op per the spec
    if te.action.WhichOneof("type") != "action":
        if not te.HasField("action"):
            raise invalid(f"{what}: INSERT needs an action")
        raise invalid(f"{what} is a direct table: only an Action is allowed")
    _check_direct(info, te, what)
    act, params, named = parse_action(info, te.action.action, default=False, what=what)
    entry = Entry(
        match=match,
        priority=te.priority,
        action_id=act.id,
        params=params,
        call=ActionCall(act.name, named, hit=True),
        controller_metadata=te.controller_metadata,
        metadata=te.metadata,
    )
    if utype == Update.INSERT:
        table.insert(entry)
        return lambda: table.delete(key)
    old = table.modify(entry)
    return lambda: table.modify(old)


def _write_default(table: Table, utype: int, te: p4r.TableEntry) -> UndoFn:
    info = table.info
    what = f"{info.name} default entry"
    if utype != Update.MODIFY:
        raise invalid(f"{what}: only MODIFY is allowed on a default entry")
    if te.match or te.priority:
        raise invalid(f"{what}: match and priority must be empty")
    if info.const_default_action_id:
        raise permission_denied(f"{what} is const")
    _check_direct(info, te, what)
    old = table.default
    if not te.HasField("action"):
        table.default = table.initial_default
    else:
        if te.action.WhichOneof("type") != "action":
            raise invalid(f"{what}: only an Action is allowed")
        act, params, named = parse_action(info, te.action.action, default=True, what=what)
        table.default = Entry(
            match=(),
            priority=0,
            action_id=act.id,
            params=params,
            call=ActionCall(act.name, named, hit=False),
            controller_metadata=te.controller_metadata,
            metadata=te.metadata,
        )

    def undo() -> None:
        table.default = old

    return undo


def _index(entry, size: int, what: str) -> int | None:
    if not entry.HasField("index"):
        return None
    idx = entry.index.index
    if idx < 0:
        raise invalid(f"{what}: negative index {idx}")
    if idx >= size:
        raise out_of_range(f"{what}: index {idx} out of range (size {size})")
    return idx


def _write_counter(state: SwitchState, utype: int, ce: p4r.CounterEntry) -> UndoFn:
    info = state.index.counters.get(ce.counter_id)
    if info is None:
        raise invalid(f"unknown counter id {ce.counter_id}")
    what = f"counter {info.name}"
    if utype != Update.MODIFY:
        raise invalid(f"{what}: only MODIFY is allowed on a counter")
    idx = _index(ce, info.size, what)
    if not ce.HasField("data"):
        return _noop
    if ce.data.packet_count < 0 or ce.data.byte_count < 0:
        raise invalid(f"{what}: counts must not be negative")
    packets, octets = state.counters[info.id]
    cells = range(info.size) if idx is None else [idx]
    saved = [(i, packets[i], octets[i]) for i in cells]
    for i in cells:
        packets[i] = ce.data.packet_count
        octets[i] = ce.data.byte_count

    def undo() -> None:
        for i, p, b in saved:
            packets[i] = p
            octets[i] = b

    return undo


def _register_value(info, data: p4d.P4Data, what: str) -> int:
    if data.WhichOneof("data") != "bitstring":
        raise invalid(f"{what}: data must be a bitstring")
    return decode_uint(data.bitstring, info.bitwidth, what)


def _write_register(state: SwitchState, utype: int, re: p4r.RegisterEntry) -> UndoFn:
    info = state.index.registers.get(re.register_id)
    if info is None:
        raise invalid(f"unknown register id {re.register_id}")
    what = f"register {info.name}"
    if utype != Update.MODIFY:
        raise invalid(f"{what}: only MODIFY is allowed on a register")
    idx = _index(re, info.size, what)
    if not re.HasField("data"):
        raise invalid(f"{what}: data is missing")
    value = _register_value(info, re.data, what)
    cells = state.registers[info.id]
    if idx is None:
        saved = list(cells)
        cells[:] = [value] * info.size

        def undo_all() -> None:
            cells[:] = saved

        return undo_all
    old = cells[idx]
    cells[idx] = value

    def undo() -> None:
        cells[idx] = old

    return undo


def _replicas(replicas, what: str) -> tuple[tuple[Replica, ...], bool]:
    out: list[Replica] = []
    legacy = False
    seen: set[tuple[int, int]] = set()
    for r in replicas:
        if r.backup_replicas:
            raise unimplemented(f"{what}: backup replicas are not supported")
        if r.WhichOneof("port_kind") == "port":
            port = decode_uint(r.port, 32, f"{what}: replica port")
        else:
            legacy = True
            port = r.egress_port
        if not 0 < port <= MAX_PORT:
            raise invalid(f"{what}: replica port {port} out of 1..{MAX_PORT}")
        if r.instance > MAX_INSTANCE:
            raise invalid(f"{what}: replica instance {r.instance} > {MAX_INSTANCE}")
        if (port, r.instance) in seen:
            raise invalid(f"{what}: replica (port {port}, instance {r.instance}) given twice")
        seen.add((port, r.instance))
        out.append(Replica(port, r.instance))
    return tuple(out), legacy


def _write_pre(store: dict, key: int, utype: int, value: object, what: str) -> UndoFn:
    old = store.get(key)
    if utype == Update.INSERT:
        if old is not None:
            raise already_exists(f"{what} exists")
        store[key] = value
        return lambda: store.pop(key, None)
    if old is None:
        raise not_found(f"{what} does not exist")
    if utype == Update.MODIFY:
        store[key] = value
    else:
        del store[key]

    def undo() -> None:
        store[key] = old

    return undo


def _write_clone_session(state: SwitchState, utype: int, cs: p4r.CloneSessionEntry) -> UndoFn:
    what = f"clone session {cs.session_id}"
    if cs.session_id == 0:
        raise invalid("clone session id 0 is reserved for wildcard reads")
    value = None
    if utype != Update.DELETE:
        replicas, legacy = _replicas(cs.replicas, what)
        if cs.packet_length_bytes < 0:
            raise invalid(f"{what}: packet_length_bytes must not be negative")
        if cs.class_of_service > 7:
            raise invalid(f"{what}: class_of_service {cs.class_of_service} > 7")
        value = CloneSession(
            cs.session_id, replicas, cs.class_of_service, cs.packet_length_bytes, legacy
        )
    return _write_pre(state.clone_sessions, cs.session_id, utype, value, what)


def _write_multicast_group(state: SwitchState, utype: int, mg: p4r.MulticastGroupEntry) -> UndoFn:
    what = f"multicast group {mg.multicast_group_id}"
    if mg.multicast_group_id == 0:
        raise invalid("multicast group id 0 is reserved for wildcard reads")
    value = None
    if utype != Update.DELETE:
        replicas, legacy = _replicas(mg.replicas, what)
        value = MulticastGroup(mg.multicast_group_id, replicas, mg.metadata, legacy)
    return _write_pre(state.multicast_groups, mg.multicast_group_id, utype, value, what)


def _write_digest(state: SwitchState, utype: int, de: p4r.DigestEntry) -> UndoFn:
    info = state.index.digests.get(de.digest_id)
    if info is None:
        raise invalid(f"unknown digest id {de.digest_id}")
    engine = state.digests
    if engine is None:
        raise unimplemented("digests are not enabled on this switch")
    what = f"digest {info.name}"
    old = engine.config(info.id)
    if utype == Update.DELETE:
        if old is None:
            raise not_found(f"{what} is not enabled")
        engine.disable(info.id)
        return lambda: engine.enable(info.id, old)
    c = de.config
    if c.max_timeout_ns < 0 or c.max_list_size < 0 or c.ack_timeout_ns < 0:
        raise invalid(f"{what}: config values must not be negative")
    config = DigestConfig(c.max_timeout_ns, c.max_list_size, c.ack_timeout_ns)
    if utype == Update.INSERT:
        if old is not None:
            raise already_exists(f"{what} is already enabled")
        engine.enable(info.id, config)
        return lambda: engine.disable(info.id)
    if old is None:
        raise not_found(f"{what} is not enabled")
    engine.reconfigure(info.id, config)
    return lambda: engine.reconfigure(info.id, old)


# ---------------------------------------------------------------------------------------------
# Reads


def read_entity(state: SwitchState, entity: p4r.Entity) -> Iterator[p4r.Entity]:
    """The entities one read request (possibly a wildcard) selects. Raises P4RTError."""
    kind = entity.WhichOneof("entity")
    if kind == "table_entry":
        return _read_tables(state, entity.table_entry)
    if kind == "counter_entry":
        return _read_counters(state, entity.counter_entry)
    if kind == "register_entry":
        return _read_registers(state, entity.register_entry)
    if kind == "packet_replication_engine_entry":
        return _read_pre(state, entity.packet_replication_engine_entry)
    if kind == "digest_entry":
        return _read_digests(state, entity.digest_entry)
    if kind is None:
        raise invalid("entity is not set")
    raise unimplemented(f"{kind} is not supported by the lab switch")


def encode_match(info: TableInfo, match: MatchKey) -> list[p4r.FieldMatch]:
    out = []
    for field, m in zip(info.match_fields, match, strict=True):
        kind = field.match_type
        if kind == EXACT:
            out.append(p4r.FieldMatch(field_id=field.id, exact={"value": encode_uint(m)}))
        elif kind == LPM and m[1]:
            out.append(
                p4r.FieldMatch(
                    field_id=field.id, lpm={"value": encode_uint(m[0]), "prefix_len": m[1]}
                )
            )
        elif kind == TERNARY and m[1]:
            out.append(
                p4r.FieldMatch(
                    field_id=field.id,
                    ternary={"value": encode_uint(m[0]), "mask": encode_uint(m[1])},
                )
            )
        elif kind == RANGE and m != (0, (1 << field.bitwidth) - 1):
            out.append(
                p4r.FieldMatch(
                    field_id=field.id,
                    range={"low": encode_uint(m[0]), "high": encode_uint(m[1])},
                )
            )
        elif kind == OPTIONAL and m is not None:
            out.append(p4r.FieldMatch(field_id=field.id, optional={"value": encode_uint(m)}))
    return out


def encode_action(state: SwitchState, entry: Entry) -> p4r.TableAction:
    act = state.index.actions[entry.action_id]
    return p4r.TableAction(
        action=p4r.Action(
            action_id=act.id,
            params=[
                p4r.Action.Param(param_id=p.id, value=encode_uint(v))
                for p, v in zip(act.params, entry.params, strict=True)
            ],
        )
    )


def _entry_pb(state: SwitchState, info: TableInfo, entry: Entry, default: bool) -> p4r.Entity:
    te = p4r.TableEntry(
        table_id=info.id,
        match=[] if default else encode_match(info, entry.match),
        action=encode_action(state, entry),
        priority=entry.priority,
        controller_metadata=entry.controller_metadata,
        metadata=entry.metadata,
        is_default_action=default,
        is_const=default and bool(info.const_default_action_id),
    )
    return p4r.Entity(table_entry=te)


def _read_tables(state: SwitchState, te: p4r.TableEntry) -> Iterator[p4r.Entity]:
    if te.table_id == 0:
        tables = list(state.iter_tables())
        if te.match or te.HasField("action") or te.priority or te.is_default_action:
            raise invalid("a read of all tables (table_id 0) cannot filter")
    else:
        tables = [_table_info(state, te.table_id)]
    # Validate the filters before yielding anything.
    match_filter = None
    if te.match:
        match_filter = (parse_match(tables[0].info, te.match, what=tables[0].info.name),)
    action_filter = te.action.action.action_id if te.HasField("action") else 0
    return _iter_table_entries(state, tables, te, match_filter, action_filter)


def _iter_table_entries(state, tables, te, match_filter, action_filter) -> Iterator[p4r.Entity]:
    for table in tables:
        info = table.info
        if te.is_default_action:
            candidates = [(table.default, True)]
        elif match_filter is not None:
            entry = table.entries.get((match_filter[0], te.priority))
            candidates = [] if entry is None else [(entry, False)]
        else:
            candidates = [(e, False) for e in table.entries.values()]
        for entry, default in candidates:
            if action_filter and entry.action_id != action_filter:
                continue
            if te.priority and entry.priority != te.priority:
                continue
            if te.controller_metadata and entry.controller_metadata != te.controller_metadata:
                continue
            if te.metadata and entry.metadata != te.metadata:
                continue
            yield _entry_pb(state, info, entry, default)


def _read_counters(state: SwitchState, ce: p4r.CounterEntry) -> Iterator[p4r.Entity]:
    if ce.counter_id == 0:
        infos = list(state.index.counters.values())
        idx = None
    else:
        info = state.index.counters.get(ce.counter_id)
        if info is None:
            raise invalid(f"unknown counter id {ce.counter_id}")
        infos = [info]
        idx = _index(ce, info.size, f"counter {info.name}")

    def gen() -> Iterator[p4r.Entity]:
        for info in infos:
            packets, octets = state.counters[info.id]
            cells = range(info.size) if idx is None else [idx]
            for i in cells:
                yield p4r.Entity(
                    counter_entry=p4r.CounterEntry(
                        counter_id=info.id,
                        index=p4r.Index(index=i),
                        data=p4r.CounterData(byte_count=octets[i], packet_count=packets[i]),
                    )
                )

    return gen()


def _read_registers(state: SwitchState, re: p4r.RegisterEntry) -> Iterator[p4r.Entity]:
    if re.register_id == 0:
        infos = list(state.index.registers.values())
        idx = None
    else:
        info = state.index.registers.get(re.register_id)
        if info is None:
            raise invalid(f"unknown register id {re.register_id}")
        infos = [info]
        idx = _index(re, info.size, f"register {info.name}")

    def gen() -> Iterator[p4r.Entity]:
        for info in infos:
            cells = state.registers[info.id]
            for i in range(info.size) if idx is None else [idx]:
                yield p4r.Entity(
                    register_entry=p4r.RegisterEntry(
                        register_id=info.id,
                        index=p4r.Index(index=i),
                        data=p4d.P4Data(bitstring=encode_uint(cells[i])),
                    )
                )

    return gen()


def _replicas_pb(replicas: tuple[Replica, ...], legacy: bool) -> list[p4r.Replica]:
    if legacy:
        return [p4r.Replica(egress_port=r.port, instance=r.instance) for r in replicas]
    return [p4r.Replica(port=encode_uint(r.port), instance=r.instance) for r in replicas]


def _read_pre(state: SwitchState, pre: p4r.PacketReplicationEngineEntry) -> Iterator[p4r.Entity]:
    which = pre.WhichOneof("type")
    if which == "clone_session_entry":
        sid = pre.clone_session_entry.session_id
        if sid and sid not in state.clone_sessions:
            raise not_found(f"clone session {sid} does not exist")
        sessions = [state.clone_sessions[sid]] if sid else list(state.clone_sessions.values())
        return iter(
            [
                p4r.Entity(
                    packet_replication_engine_entry=p4r.PacketReplicationEngineEntry(
                        clone_session_entry=p4r.CloneSessionEntry(
                            session_id=s.session_id,
                            replicas=_replicas_pb(s.replicas, s.legacy_ports),
                            class_of_service=s.class_of_service,
                            packet_length_bytes=s.packet_length_bytes,
                        )
                    )
                )
                for s in sorted(sessions, key=lambda s: s.session_id)
            ]
        )
    if which == "multicast_group_entry":
        gid = pre.multicast_group_entry.multicast_group_id
        if gid and gid not in state.multicast_groups:
            raise not_found(f"multicast group {gid} does not exist")
        groups = [state.multicast_groups[gid]] if gid else list(state.multicast_groups.values())
        return iter(
            [
                p4r.Entity(
                    packet_replication_engine_entry=p4r.PacketReplicationEngineEntry(
                        multicast_group_entry=p4r.MulticastGroupEntry(
                            multicast_group_id=g.group_id,
                            replicas=_replicas_pb(g.replicas, g.legacy_ports),
                            metadata=g.metadata,
                        )
                    )
                )
                for g in sorted(groups, key=lambda g: g.group_id)
            ]
        )
    raise invalid("PacketReplicationEngineEntry read needs clone_session_entry or multicast")


def _read_digests(state: SwitchState, de: p4r.DigestEntry) -> Iterator[p4r.Entity]:
    engine = state.digests
    configured = engine.configured() if engine is not None else []
    if de.digest_id:
        if de.digest_id not in state.index.digests:
            raise invalid(f"unknown digest id {de.digest_id}")
        configured = [(d, c) for d, c in configured if d == de.digest_id]
    return iter(
        [
            p4r.Entity(
                digest_entry=p4r.DigestEntry(
                    digest_id=d,
                    config=p4r.DigestEntry.Config(
                        max_timeout_ns=c.max_timeout_ns,
                        max_list_size=c.max_list_size,
                        ack_timeout_ns=c.ack_timeout_ns,
                    ),
                )
            )
            for d, c in sorted(configured)
        ]
    )
