"""The lab switch's entity store: what P4Runtime writes and the pipeline reads.

:class:`SwitchState` holds the tables, indirect counters, registers, the packet replication
engine (clone sessions, multicast groups) and the digest engine of one committed pipeline,
sized and typed from its P4Info. It implements :class:`~netmigrate.switch.interfaces.
PipelineState`, the pipeline's only view of the runtime. Those methods sit on the packet path:
they do name lookups in plain dicts and nothing else. The P4Runtime messages themselves are
translated and validated in :mod:`netmigrate.switch.entities`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from netmigrate.switch.digests import DigestEngine
from netmigrate.switch.interfaces import ActionCall
from netmigrate.switch.p4info import ActionInfo, P4InfoIndex, Scope, TableInfo
from netmigrate.switch.tables import Entry, Table

log = logging.getLogger(__name__)

#: table name -> (action name, {param name: value}): initial default actions that the P4Info
#: cannot carry (p4c does not emit ``initial_default_action``); the pipeline module may
#: declare them as ``INITIAL_DEFAULT_ACTIONS``.
DefaultActions = Mapping[str, tuple[str, Mapping[str, int]]]


@dataclass(frozen=True, slots=True)
class Replica:
    port: int
    instance: int = 0


@dataclass(slots=True)
class CloneSession:
    session_id: int
    replicas: tuple[Replica, ...]
    class_of_service: int = 0
    packet_length_bytes: int = 0
    #: Replicas were written with the deprecated uint32 ``egress_port`` (echoed back on read).
    legacy_ports: bool = False
    targets: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = [(r.port, r.instance) for r in self.replicas]


@dataclass(slots=True)
class MulticastGroup:
    group_id: int
    replicas: tuple[Replica, ...]
    metadata: bytes = b""
    legacy_ports: bool = False
    targets: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = [(r.port, r.instance) for r in self.replicas]


class DefaultActionError(ValueError):
    """The initial default action of a table cannot be determined."""


def resolve_initial_default(
    info: TableInfo, index: P4InfoIndex, declared: DefaultActions | None
) -> tuple[ActionInfo, dict[str, int]]:
    """The action a table runs on a miss before any controller changes it.

    In order: the P4Info's const default, its ``initial_default_action``, the pipeline's
    declaration, and else the table's only parameterless default-capable action
    (preferring ``@defaultonly`` ones), which is how the NetMigrate program is written.
    """
    if info.const_default_action_id:
        return index.actions[info.const_default_action_id], {}
    if info.initial_default_action is not None:
        call = info.initial_default_action
        action = index.actions[call.action_id]
        args = {a.param_id: int.from_bytes(a.value, "big") for a in call.arguments}
        return action, {p.name: args.get(p.id, 0) for p in action.params}
    if declared and (info.name in declared or info.alias in declared):
        name, params = declared.get(info.name) or declared[info.alias]
        action = index.actions_by_name.get(name)
        if action is None or action.id not in info.actions:
            raise DefaultActionError(f"{info.name}: declared default {name!r} is not its action")
        return action, dict(params)
    refs = [r for r in info.actions.values() if r.default_allowed and not r.action.params]
    default_only = [r for r in refs if r.scope == Scope.DEFAULT_ONLY]
    for candidates in (default_only, refs):
        if len(candidates) == 1:
            return candidates[0].action, {}
    raise DefaultActionError(
        f"{info.name}: cannot tell its initial default action from the P4Info; "
        "declare it in the pipeline's INITIAL_DEFAULT_ACTIONS"
    )


class SwitchState:
    """Entities of one committed pipeline. Implements ``PipelineState``."""

    def __init__(
        self,
        index: P4InfoIndex,
        cpu_port: int,
        digests: DigestEngine | None = None,
        initial_defaults: DefaultActions | None = None,
    ) -> None:
        self.index = index
        self.cpu_port = cpu_port
        self.digests = digests
        self.tables: dict[int, Table] = {}
        self._tables_by_name: dict[str, Table] = {}
        for info in index.tables.values():
            action, params = resolve_initial_default(info, index, initial_defaults)
            default = Entry(
                match=(),
                priority=0,
                action_id=action.id,
                params=tuple(params[p.name] for p in action.params),
                call=ActionCall(action.name, params, hit=False),
            )
            table = Table(info, default)
            self.tables[info.id] = table
            self._tables_by_name[info.name] = table
            self._tables_by_name.setdefault(info.alias, table)
        self._lookups = {name: t.lookup for name, t in self._tables_by_name.items()}
        # Counter cells as two parallel lists: the packet path does two list increments.
        self.counters: dict[int, tuple[list[int], list[int]]] = {
            c.id: ([0] * c.size, [0] * c.size) for c in index.counters.values()
        }
        self._counters_by_name = {
            name: self.counters[c.id] for name, c in index.counters_by_name.items()
        }
        self.registers: dict[int, list[int]] = {
            r.id: [0] * r.size for r in index.registers.values()
        }
        self._registers_by_name = {
            name: (self.registers[r.id], (1 << r.bitwidth) - 1)
            for name, r in index.registers_by_name.items()
        }
        self._digest_ids = {name: d.id for name, d in index.digests_by_name.items()}
        self._digest_members = {
            name: tuple(m for m, _ in d.members) for name, d in index.digests_by_name.items()
        }
        self.clone_sessions: dict[int, CloneSession] = {}
        self.multicast_groups: dict[int, MulticastGroup] = {}
        #: Pipeline calls that named something the P4Info lacks, or an index out of range.
        self.errors = 0

    # -- PipelineState (packet path) -----------------------------------------------------------

    def table_lookup(self, table: str, key: Mapping[str, int]) -> ActionCall:
        return self._lookups[table](key)

    def register_read(self, register: str, index: int) -> int:
        cells, _ = self._registers_by_name[register]
        if 0 <= index < len(cells):
            return cells[index]
        # v1model: an out-of-bounds read yields an unspecified value; we give 0.
        self.errors += 1
        return 0

    def register_write(self, register: str, index: int, value: int) -> None:
        cells, mask = self._registers_by_name[register]
        if 0 <= index < len(cells):
            cells[index] = value & mask
        else:  # v1model: an out-of-bounds write is a no-op.
            self.errors += 1

    def counter_add(self, counter: str, index: int, nbytes: int) -> None:
        packets, octets = self._counters_by_name[counter]
        if 0 <= index < len(packets):
            packets[index] += 1
            octets[index] += nbytes
        else:
            self.errors += 1

    def clone_session(self, session_id: int) -> list[tuple[int, int]]:
        session = self.clone_sessions.get(session_id)
        return [] if session is None else session.targets

    def multicast_group(self, group_id: int) -> list[tuple[int, int]]:
        group = self.multicast_groups.get(group_id)
        return [] if group is None else group.targets

    def digest(self, name: str, fields: Mapping[str, int]) -> None:
        if self.digests is None:
            return
        members = self._digest_members[name]
        self.digests.push(self._digest_ids[name], tuple(fields[m] for m in members))

    # -- control path helpers ------------------------------------------------------------------

    def table(self, table: str | int) -> Table:
        if isinstance(table, int):
            return self.tables[table]
        return self._tables_by_name[table]

    def iter_tables(self) -> Iterable[Table]:
        return self.tables.values()


UndoFn = Callable[[], None]
