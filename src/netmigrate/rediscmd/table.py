"""Redis' own command table: which commands read or write, and where their keys are.

Nothing here is a hand-kept list of commands. The table is what ``COMMAND`` answers on a Redis
of the deployment (:meth:`CommandTable.from_command_reply`), or the copy of it shipped with the
package (``data/commands.json``, written by ``scripts/gen_command_table.py`` from a real
``redis-server``). Keys are found from the commands' *key specs* exactly as Redis does
(``getKeysUsingKeySpecs`` in ``db.c``): a begin-search step (an argument index, or a keyword
searched from one end) then a find-keys step (a range, or a count of keys read from an
argument). The key-spec flags say how each key is used (``RO`` read, ``RW`` read-modify-write,
``OW`` blind overwrite, ``RM`` removal), which is what a migration target needs to know: a
write that is not a blind overwrite must pull the key's old value first, and a removal leaves
a tombstone.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.resources
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netmigrate.protocol.slot import key_slot


class CommandError(Exception):
    """A command that cannot be sent as it is; ``message`` is Redis' own error reply text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Kind(enum.Enum):
    READ = "read"  # reads keys of one slot: double-read during a migration
    WRITE = "write"  # may change keys of one slot: sent to the migration target
    KEYLESS = "keyless"  # touches no key (ECHO, TIME ...): any server of the keyspace answers
    FANOUT = "fanout"  # keyspace-wide (KEYS, DBSIZE, FLUSHALL ...): every server, then merged
    UNSUPPORTED = "unsupported"  # cannot be served through one slot's owner (see ``reason``)


@dataclass(frozen=True)
class KeySpec:
    flags: frozenset[str]
    begin: Mapping[str, Any]  # {"type": "index", "index": n} | keyword | unknown
    find: Mapping[str, Any]  # {"type": "range", ...} | keynum | unknown

    @property
    def incomplete(self) -> bool:
        return (
            "incomplete" in self.flags
            or self.begin["type"] == "unknown"
            or self.find["type"] == "unknown"
        )


@dataclass(frozen=True)
class CommandSpec:
    name: str  # lower case; "object|encoding" for a subcommand
    arity: int  # Redis' convention: -N means at least N arguments, the name included
    flags: frozenset[str]
    acl_categories: frozenset[str]
    tips: frozenset[str]
    key_specs: tuple[KeySpec, ...]
    subcommands: Mapping[str, CommandSpec] = field(default_factory=dict)

    @property
    def is_write(self) -> bool:
        return "write" in self.flags


@dataclass(frozen=True)
class KeyRef:
    index: int  # position in the argument vector (the command name is 0)
    flags: frozenset[str]

    @property
    def needs_old_value(self) -> bool:
        """A write that is not a blind overwrite or a plain removal reads the key first."""
        return bool(self.flags & {"RW", "RO"}) or not (self.flags & {"OW", "RM"})

    @property
    def removes(self) -> bool:
        return "RM" in self.flags or "delete" in self.flags


@dataclass(frozen=True)
class Classified:
    """What a request of this command is, for the wire: its kind, keys and slot."""

    spec: CommandSpec
    kind: Kind
    keys: tuple[bytes, ...]
    key_refs: tuple[KeyRef, ...]
    slot: int | None  # None when the command has no key
    reason: str = ""  # for Kind.UNSUPPORTED: why, in words a user can act on

    @property
    def request_policy(self) -> str:
        """Redis' ``request_policy`` tip (``all_shards``, ``all_nodes``, ``special``) or ""."""
        return _tip(self.spec, "request_policy")

    @property
    def response_policy(self) -> str:
        """Redis' ``response_policy`` tip (``agg_sum``, ``all_succeeded`` ...) or ""."""
        return _tip(self.spec, "response_policy")


def _tip(spec: CommandSpec, name: str) -> str:
    for tip in spec.tips:
        key, _, value = tip.partition(":")
        if key == name:
            return value
    return ""


#: Command flags that make a command impossible to serve as one request to one slot's owner.
_UNSERVABLE_FLAGS = {
    "blocking": "blocking commands are not served through NetMigrate",
    "pubsub": "pub/sub is not served through NetMigrate",
    "admin": "administrative commands are not served through NetMigrate",
    "no_multi": "this command cannot run as one NetMigrate request",
}


def _pairs(value: Any) -> dict[str, Any]:
    """A RESP map as redis-py gives it: a dict, or a flat list of key, value, key, value."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    else:
        it = iter(value)
        items = zip(it, it, strict=True)
    return {_text(k): v for k, v in items}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spec_part(value: Any) -> dict[str, Any]:
    part = _pairs(value)
    kind = _text(part["type"])
    out: dict[str, Any] = {"type": kind}
    for k, v in _pairs(part.get("spec") or []).items():
        out[k] = _text(v) if isinstance(v, bytes) else int(v)
    return out


def _key_spec(raw: Any) -> KeySpec:
    d = _pairs(raw)
    return KeySpec(
        flags=frozenset(_text(f) for f in d.get("flags", [])),
        begin=_spec_part(d["begin_search"]),
        find=_spec_part(d["find_keys"]),
    )


def _command(raw: Sequence[Any], parent: str = "") -> CommandSpec:
    name = _text(raw[0]).lower()
    subs = {}
    for sub in raw[9] if len(raw) > 9 else []:
        spec = _command(sub, name)
        subs[spec.name.split("|", 1)[1]] = spec
    return CommandSpec(
        name=name,
        arity=int(raw[1]),
        flags=frozenset(_text(f) for f in raw[2]),
        acl_categories=frozenset(_text(c).lstrip("@") for c in raw[6])
        if len(raw) > 6
        else frozenset(),
        tips=frozenset(_text(t) for t in raw[7]) if len(raw) > 7 else frozenset(),
        key_specs=tuple(_key_spec(s) for s in raw[8]) if len(raw) > 8 else (),
        subcommands=subs,
    )


def _to_json(spec: CommandSpec) -> dict[str, Any]:
    return {
        "arity": spec.arity,
        "flags": sorted(spec.flags),
        "acl_categories": sorted(spec.acl_categories),
        "tips": sorted(spec.tips),
        "key_specs": [
            {"flags": sorted(k.flags), "begin_search": dict(k.begin), "find_keys": dict(k.find)}
            for k in spec.key_specs
        ],
        "subcommands": {n: _to_json(s) for n, s in sorted(spec.subcommands.items())},
    }


def _from_json(name: str, d: Mapping[str, Any]) -> CommandSpec:
    return CommandSpec(
        name=name,
        arity=int(d["arity"]),
        flags=frozenset(d["flags"]),
        acl_categories=frozenset(d["acl_categories"]),
        tips=frozenset(d["tips"]),
        key_specs=tuple(
            KeySpec(frozenset(k["flags"]), dict(k["begin_search"]), dict(k["find_keys"]))
            for k in d["key_specs"]
        ),
        subcommands={n: _from_json(f"{name}|{n}", s) for n, s in d["subcommands"].items()},
    )


class CommandTable:
    """Look up a command (and its subcommand), find its keys, classify a request."""

    def __init__(self, commands: Mapping[str, CommandSpec], redis_version: str = "") -> None:
        self._commands = dict(commands)
        self.redis_version = redis_version
        #: (name as sent, argument count) -> how such a request classifies: see :meth:`classify`.
        self._plans: dict[tuple[bytes, int], _Plan] = {}

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_command_reply(cls, reply: Iterable[Any], redis_version: str = "") -> CommandTable:
        """From the reply of ``COMMAND`` (or ``COMMAND INFO ...``) of a real Redis."""
        specs = [_command(raw) for raw in reply if raw]
        return cls({s.name: s for s in specs}, redis_version)

    @classmethod
    def shipped(cls) -> CommandTable:
        """The table generated from a real redis-server and shipped with the package."""
        text = importlib.resources.files(__package__).joinpath("data/commands.json").read_text()
        return cls.from_json(text)

    @classmethod
    def from_json(cls, text: str) -> CommandTable:
        doc = json.loads(text)
        return cls({n: _from_json(n, d) for n, d in doc["commands"].items()}, doc["redis_version"])

    def to_json(self) -> str:
        doc = {
            "redis_version": self.redis_version,
            "commands": {n: _to_json(s) for n, s in sorted(self._commands.items())},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def __len__(self) -> int:
        return len(self._commands)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._commands

    # -- using -----------------------------------------------------------------------------

    def lookup(self, args: Sequence[bytes]) -> CommandSpec:
        """The spec of ``args`` (a subcommand's when the command has them); Redis' errors."""
        if not args:
            raise CommandError("ERR empty command")
        name = args[0].decode(errors="replace").lower()
        spec = self._commands.get(name)
        if spec is None:
            shown = " ".join(f"'{a.decode(errors='replace')}'" for a in args[1:3])
            raise CommandError(
                f"ERR unknown command '{args[0].decode(errors='replace')}', "
                f"with args beginning with: {shown}".rstrip(": ")
            )
        if spec.subcommands and len(args) > 1:
            sub = spec.subcommands.get(args[1].decode(errors="replace").lower())
            if sub is None:
                raise CommandError(
                    f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
                    f"Try {name.upper()} HELP."
                )
            spec = sub
        _check_arity(spec, len(args))
        return spec

    def key_refs(self, spec: CommandSpec, args: Sequence[bytes]) -> tuple[KeyRef, ...]:
        """Every key position of this request, found from the key specs as Redis does."""
        argc = len(args)
        refs: list[KeyRef] = []
        for ks in spec.key_specs:
            found = _keys_of_spec(ks, args, argc)
            if found is None:
                continue
            refs.extend(KeyRef(i, ks.flags) for i in found)
        return tuple(refs)

    def classify(self, args: Sequence[bytes]) -> Classified:
        """The request's kind, keys and slot; Redis' own error (:class:`CommandError`) when it
        would answer one before running it (unknown command, arity, CROSSSLOT)."""
        # Every command of a pipeline would otherwise be looked up, arity-checked and searched
        # for keys through its key specs again (~8 % of the gateway's CPU): for most commands
        # that work depends only on the name and the argument count, so it is done once.
        plan = self._plans.get((args[0], len(args))) if args else None
        if plan is not None:
            return plan.classify(args)
        c = self._classify(args)
        self._remember(args, c)
        return c

    def _remember(self, args: Sequence[bytes], c: Classified) -> None:
        spec = c.spec
        if (
            c.slot is None
            or len(self._plans) >= _MAX_PLANS
            or type(args[0]) is not bytes
            or self._commands.get(spec.name) is not spec  # a subcommand: found from args[1]
            or not all(
                ks.begin["type"] == "index" and ks.find["type"] == "range" for ks in spec.key_specs
            )
        ):
            # Key positions found by a keyword search or a key count depend on the arguments'
            # values, not just their number.
            return
        positions = tuple(r.index for r in c.key_refs)
        self._plans[(args[0], len(args))] = _Plan(spec, c.kind, positions, c.key_refs, c.reason)

    def _classify(self, args: Sequence[bytes]) -> Classified:
        spec = self.lookup(args)
        refs = self.key_refs(spec, args)
        keys = tuple(args[r.index] for r in refs)
        slots = {key_slot(k) for k in keys}
        if len(slots) > 1:
            raise CommandError("CROSSSLOT Keys in request don't hash to the same slot")
        slot = slots.pop() if slots else None
        for flag, reason in _UNSERVABLE_FLAGS.items():
            if flag in spec.flags:
                return Classified(spec, Kind.UNSUPPORTED, keys, refs, slot, reason)
        if any(ks.incomplete for ks in spec.key_specs) and spec.name not in _SCRIPTS:
            # Redis itself needs command-specific code to find every key of these (SORT's
            # BY/GET patterns, MIGRATE's KEYS): the keys found may not be all of them.
            return Classified(
                spec,
                Kind.UNSUPPORTED,
                keys,
                refs,
                slot,
                f"{spec.name.upper()} names keys Redis cannot find from its key specs",
            )
        if slot is None:
            if spec.name in _SCRIPTS:
                # A script that declares no key may touch none (the agent refuses any key it
                # did not declare, and a write naming no key): any server may run it.
                kind = Kind.WRITE if spec.name in _WRITING_SCRIPTS else Kind.KEYLESS
                return Classified(spec, kind, keys, refs, None)
            if any(t.startswith("request_policy:") for t in spec.tips):
                # Redis Cluster's own tips say how to fan it out and merge the answers.
                return Classified(spec, Kind.FANOUT, keys, refs, None)
            if spec.is_write and spec.key_specs:
                # A command on keys that names none (a key count of 0): it touches no key and
                # answers Redis' own error; any server may run it, as a write.
                return Classified(spec, Kind.WRITE, keys, refs, None)
            if spec.is_write:
                return Classified(
                    spec,
                    Kind.UNSUPPORTED,
                    keys,
                    refs,
                    slot,
                    f"{spec.name.upper()} works on the whole keyspace, not on the keys of one slot",
                )
            return Classified(spec, Kind.KEYLESS, keys, refs, None)
        kind = Kind.WRITE if spec.is_write or spec.name in _WRITING_SCRIPTS else Kind.READ
        return Classified(spec, kind, keys, refs, slot)


#: Plans kept at most (name spellings x argument counts: MSET of any length is one each).
_MAX_PLANS = 4096


@dataclass(frozen=True, slots=True)
class _Plan:
    """How every request of one command name and argument count classifies, but its slot:
    key positions from the key specs (index + range only) and the kind once a key names a
    slot (which then depends on the command alone)."""

    spec: CommandSpec
    kind: Kind
    positions: tuple[int, ...]
    key_refs: tuple[KeyRef, ...]
    reason: str

    def classify(self, args: Sequence[bytes]) -> Classified:
        if len(self.positions) == 1:
            key = args[self.positions[0]]
            return Classified(
                self.spec, self.kind, (key,), self.key_refs, key_slot(key), self.reason
            )
        keys = tuple(args[i] for i in self.positions)
        slots = {key_slot(k) for k in keys}
        if len(slots) > 1:
            raise CommandError("CROSSSLOT Keys in request don't hash to the same slot")
        return Classified(self.spec, self.kind, keys, self.key_refs, slots.pop(), self.reason)


def in_transaction(c: Classified) -> Classified:
    """How a command runs inside MULTI/EXEC (one script at the agent): a blocking command on
    keys of one slot never blocks there, as in Redis' own MULTI and scripts (BLPOP answers at
    once, like LPOP), so it is served as the read or write it then is; a keyspace-wide command
    that every server answers alike without changing anything (PING) is answered by one."""
    if (
        c.kind is Kind.UNSUPPORTED
        and "blocking" in c.spec.flags
        and c.slot is not None
        and not any(f in c.spec.flags for f in _UNSERVABLE_FLAGS if f != "blocking")
    ):
        return dataclasses.replace(c, kind=Kind.WRITE if c.spec.is_write else Kind.READ, reason="")
    if (
        c.kind is Kind.FANOUT
        and "response_policy:all_succeeded" in c.spec.tips
        and "fast" in c.spec.flags
        and not c.spec.is_write
    ):
        # Every server answers it alike and it changes nothing (PING): inside a transaction
        # the transaction's server answers for all.
        return dataclasses.replace(c, kind=Kind.KEYLESS)
    return c


#: Scripts and functions declare their keys (a key count argument) and run atomically on the
#: one server that owns those keys' slot; the first three may write.
_WRITING_SCRIPTS = frozenset({"eval", "evalsha", "fcall"})
_SCRIPTS = _WRITING_SCRIPTS | {"eval_ro", "evalsha_ro", "fcall_ro"}


def _check_arity(spec: CommandSpec, argc: int) -> None:
    if (spec.arity > 0 and argc != spec.arity) or (spec.arity < 0 and argc < -spec.arity):
        name = spec.name.replace("|", " ")
        raise CommandError(f"ERR wrong number of arguments for '{name}' command")


def _keys_of_spec(ks: KeySpec, args: Sequence[bytes], argc: int) -> list[int] | None:
    """Positions of one key spec's keys (``getKeysUsingKeySpecs``), None when it has none."""
    begin, find = ks.begin, ks.find
    if begin["type"] == "index":
        first = int(begin["index"])
    elif begin["type"] == "keyword":
        word = str(begin["keyword"]).encode().lower()
        start_from = int(begin["startfrom"])
        start = start_from if start_from > 0 else argc + start_from
        end = argc - 1 if start_from > 0 else 1
        first = 0
        i = start
        while i != end:
            if i >= argc or i < 1:
                break
            if args[i].lower() == word:
                first = i + 1
                break
            i = i + 1 if start <= end else i - 1
        if not first:
            return None
    else:
        return None
    if find["type"] == "range":
        lastkey, limit, step = int(find["lastkey"]), int(find["limit"]), int(find["keystep"])
        if lastkey >= 0:
            last = first + lastkey
        elif not limit:
            last = argc + lastkey
        else:
            last = first + ((argc - first) // limit + lastkey)
    elif find["type"] == "keynum":
        idx = first + int(find["keynumidx"])
        if idx >= argc:
            raise CommandError("ERR wrong number of arguments")
        try:
            numkeys = int(args[idx])
        except ValueError:
            numkeys = -1
        if numkeys < 0:
            # As Redis Cluster does: no keys, and the command answers its own error when it
            # runs (SINTERCARD, ZMPOP ...: "ERR numkeys should be greater than 0").
            return []
        step = int(find["keystep"])
        first += int(find["firstkey"])
        last = first + (numkeys - 1) * step
        if last >= argc:
            raise CommandError("ERR Number of keys can't be greater than number of args")
    else:
        return None
    out = []
    i = first
    while i <= last:
        if i >= argc or i < first:
            # Redis calls this an invalid spec: the arguments do not hold the keys it names.
            raise CommandError("ERR wrong number of arguments")
        out.append(i)
        i += step
    return out
