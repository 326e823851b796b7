"""Match-action tables of the lab switch: entry records and the lookup structures.

Lookups sit on the packet path, so each table picks the cheapest structure its match kinds
allow: a hash per all-exact table, prefix-length buckets (longest first) for a table with one
LPM field and otherwise exact fields, and a priority-ordered scan for ternary / range /
optional keys. Each entry holds its :class:`ActionCall` ready-made, so a hit allocates nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from netmigrate.switch.errors import already_exists, not_found, resource_exhausted
from netmigrate.switch.interfaces import ActionCall
from netmigrate.switch.p4info import EXACT, LPM, OPTIONAL, RANGE, TERNARY, TableInfo

#: One canonical element per match field, in P4Info order:
#: EXACT -> value, LPM -> (value, prefix_len), TERNARY -> (value, mask),
#: RANGE -> (low, high), OPTIONAL -> value or None (wildcard).
MatchKey = tuple[Any, ...]


@dataclass(slots=True)
class Entry:
    match: MatchKey
    priority: int
    action_id: int
    #: Parameter values in the action's P4Info parameter order.
    params: tuple[int, ...]
    call: ActionCall
    controller_metadata: int = 0
    metadata: bytes = b""
    idle_timeout_ns: int = 0

    @property
    def key(self) -> tuple[MatchKey, int]:
        return (self.match, self.priority)


def _mask(prefix_len: int, bitwidth: int) -> int:
    return ((1 << prefix_len) - 1) << (bitwidth - prefix_len)


class Table:
    """The entries and the current default entry of one table."""

    def __init__(self, info: TableInfo, default: Entry) -> None:
        self.info = info
        self.initial_default = default
        self.default = default
        self.entries: dict[tuple[MatchKey, int], Entry] = {}
        names = [f.name for f in info.match_fields]
        kinds = [f.match_type for f in info.match_fields]
        self._names = names
        self._getter: Callable[[Mapping[str, int]], Any] | None = (
            itemgetter(*names) if names else None
        )
        if not names:
            self._strategy = "keyless"
        elif all(k == EXACT for k in kinds):
            self._strategy = "exact"
        elif kinds.count(LPM) == 1 and all(k in (EXACT, LPM) for k in kinds):
            self._strategy = "lpm"
            self._lpm_pos = kinds.index(LPM)
            self._lpm_width = info.match_fields[self._lpm_pos].bitwidth
        else:
            self._strategy = "priority"
        self._seq = itertools.count()
        # exact: key value(s) -> call
        self._exact: dict[Any, ActionCall] = {}
        # lpm: prefix_len -> {masked key -> call}; _buckets is the lookup order
        self._lpm: dict[int, dict[Any, ActionCall]] = {}
        self._buckets: list[tuple[int, dict[Any, ActionCall]]] = []
        # priority: sorted scan list
        self._scan: list[tuple[int, int, tuple[tuple[str, int, Any], ...], ActionCall]] = []
        self._scan_seq: dict[tuple[MatchKey, int], int] = {}
        #: ``lookup(key) -> ActionCall``: the packet path's entry point.
        self.lookup = self._make_lookup()

    # -- packet path ---------------------------------------------------------------------------

    def _make_lookup(self) -> Callable[[Mapping[str, int]], ActionCall]:
        """The lookup function of this table, specialised to its structure.

        It captures the index objects themselves (which change in place, never rebound),
        so the state can keep the function for the table's lifetime: one Python call per
        lookup on the packet path.
        """
        table = self
        if self._strategy == "exact":
            get = self._exact.get
            getter = self._getter
            assert getter is not None

            def lookup_exact(key: Mapping[str, int]) -> ActionCall:
                call = get(getter(key))
                return table.default.call if call is None else call

            return lookup_exact
        if self._strategy == "lpm" and len(self._names) == 1:
            name = self._names[0]
            buckets = self._buckets

            def lookup_lpm(key: Mapping[str, int]) -> ActionCall:
                value = key[name]
                for mask, bucket in buckets:
                    call = bucket.get(value & mask)
                    if call is not None:
                        return call
                return table.default.call

            return lookup_lpm
        if self._strategy == "lpm":
            return self._lookup_lpm
        if self._strategy == "priority":
            return self._lookup_scan
        return lambda key: table.default.call

    def _lookup_lpm(self, key: Mapping[str, int]) -> ActionCall:
        values = list(self._getter(key))  # type: ignore[misc]
        pos = self._lpm_pos
        raw = values[pos]
        for mask, bucket in self._buckets:
            values[pos] = raw & mask
            call = bucket.get(tuple(values))
            if call is not None:
                return call
        return self.default.call

    def _lookup_scan(self, key: Mapping[str, int]) -> ActionCall:
        for _prio, _seq, matchers, call in self._scan:
            for name, kind, a, b in matchers:
                v = key[name]
                if kind in (EXACT, OPTIONAL):
                    if v != a:
                        break
                elif kind == RANGE:
                    if not a <= v <= b:
                        break
                elif v & b != a:  # LPM and TERNARY: (value, mask)
                    break
            else:
                return call
        return self.default.call

    # -- control path --------------------------------------------------------------------------

    def insert(self, entry: Entry) -> None:
        key = entry.key
        if key in self.entries:
            raise already_exists(f"{self.info.name}: an entry with this match key exists")
        if self.info.size and len(self.entries) >= self.info.size:
            raise resource_exhausted(f"{self.info.name}: table is full ({self.info.size})")
        self.entries[key] = entry
        self._index_add(entry)

    def modify(self, entry: Entry) -> Entry:
        """Replace the entry with the same key; returns the old one."""
        old = self.entries.get(entry.key)
        if old is None:
            raise not_found(f"{self.info.name}: no entry with this match key")
        self.entries[entry.key] = entry
        self._index_remove(old)
        self._index_add(entry)
        return old

    def delete(self, key: tuple[MatchKey, int]) -> Entry:
        old = self.entries.pop(key, None)
        if old is None:
            raise not_found(f"{self.info.name}: no entry with this match key")
        self._index_remove(old)
        return old

    def clear(self) -> None:
        for entry in list(self.entries.values()):
            self.delete(entry.key)

    def _index_add(self, entry: Entry) -> None:
        strategy = self._strategy
        if strategy == "exact":
            self._exact[self._exact_key(entry.match)] = entry.call
        elif strategy == "lpm":
            plen = entry.match[self._lpm_pos][1]
            bucket = self._lpm.get(plen)
            if bucket is None:
                bucket = self._lpm[plen] = {}
                self._rebuild_buckets()
            bucket[self._lpm_key(entry.match)] = entry.call
        elif strategy == "priority":
            seq = next(self._seq)
            self._scan_seq[entry.key] = seq
            self._scan.append((entry.priority, seq, self._matchers(entry.match), entry.call))
            # Highest priority first; among equal priorities the older entry wins.
            self._scan.sort(key=lambda item: (-item[0], item[1]))

    def _index_remove(self, entry: Entry) -> None:
        strategy = self._strategy
        if strategy == "exact":
            del self._exact[self._exact_key(entry.match)]
        elif strategy == "lpm":
            plen = entry.match[self._lpm_pos][1]
            bucket = self._lpm[plen]
            del bucket[self._lpm_key(entry.match)]
            if not bucket:
                del self._lpm[plen]
                self._rebuild_buckets()
        elif strategy == "priority":
            seq = self._scan_seq.pop(entry.key)
            self._scan = [item for item in self._scan if item[1] != seq]

    def _exact_key(self, match: MatchKey) -> Any:
        return match[0] if len(match) == 1 else tuple(match)

    def _lpm_key(self, match: MatchKey) -> Any:
        pos = self._lpm_pos
        value = match[pos][0]
        if len(match) == 1:
            return value
        return tuple(value if i == pos else m for i, m in enumerate(match))

    def _rebuild_buckets(self) -> None:
        # In place: the lookup function holds this very list.
        self._buckets[:] = [
            (_mask(plen, self._lpm_width), self._lpm[plen])
            for plen in sorted(self._lpm, reverse=True)
        ]

    def _matchers(self, match: MatchKey) -> tuple[tuple[str, int, Any, Any], ...]:
        out = []
        for f, m in zip(self.info.match_fields, match, strict=True):
            kind = f.match_type
            if kind == EXACT:
                out.append((f.name, EXACT, m, None))
            elif kind == OPTIONAL:
                if m is not None:
                    out.append((f.name, OPTIONAL, m, None))
            elif kind == LPM:
                value, plen = m
                if plen:
                    out.append((f.name, LPM, value, _mask(plen, f.bitwidth)))
            elif kind == TERNARY:
                value, mask = m
                if mask:
                    out.append((f.name, TERNARY, value, mask))
            elif kind == RANGE:
                low, high = m
                if (low, high) != (0, (1 << f.bitwidth) - 1):
                    out.append((f.name, RANGE, low, high))
        return tuple(out)
