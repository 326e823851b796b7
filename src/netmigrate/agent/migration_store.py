"""Persist migration progress in the agent's own Redis, before acting on it.

Next to the ownership bitmap of :mod:`~netmigrate.agent.slot_store` (hash
:data:`~netmigrate.agent.reserved.AGENT_STATE_KEY`), an agent keeps

- :data:`~netmigrate.agent.reserved.SLOT_RECORDS_KEY`: slot -> :class:`SlotRecord` (JSON), the
  slot's migration in either role and its phase;
- :data:`~netmigrate.agent.reserved.MIGRATIONS_KEY`: migration id -> :class:`MigrationRecord`
  (JSON), the migrations this agent is the source of;
- :data:`~netmigrate.agent.reserved.EPOCHS_KEY`: slot -> the highest transition epoch this agent
  used (as a source) or accepted (as a target) for the slot. It is written with the slot record
  that carries a higher epoch, and outlives that record: a slot that comes back must leave
  again with a higher epoch than any transition of it this agent has seen.

All of them live in the reserved slot, so every change is one MULTI/EXEC: the ownership bit and
the slot's record can never disagree after a crash.

**Group commit.** Changes are written by one writer at a time. Every change asked for while a
write is in flight (or in the same turn of the event loop) joins the next write: one
MULTI/EXEC for all of them, with the bitmap computed once from the in-memory table plus every
pending ownership override. Slots of a migration change state in bursts (a wave of slots, a
target acknowledging many starts), and this makes a burst cost one round trip instead of one
per slot. Each change's ``then`` runs in order once the write succeeded; when it fails, every
change of it fails with the error and nothing in memory changes.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis.exceptions

from netmigrate.agent.config import RedisTarget
from netmigrate.agent.reserved import (
    AGENT_STATE_KEY,
    EPOCHS_KEY,
    MIGRATIONS_KEY,
    SLOT_RECORDS_KEY,
)
from netmigrate.agent.resp import RespConnection, command_of
from netmigrate.agent.slots import SlotTable

#: Source phases, in order; "done": the target owns the slot, keys not finalized yet;
#: "finalized": the moved keys were deleted here (kept as a record of the result).
OUT_PHASES = ("starting", "copying", "completing", "done", "finalized")
#: Target phases: "migrating" while the slot moves in, "cleanup" once owned while the per-slot
#: bookkeeping keys are being deleted.
IN_PHASES = ("migrating", "cleanup")


@dataclass
class SlotRecord:
    slot: int
    role: str  # "out" (this agent is the source) or "in" (the target)
    peer: int
    phase: str
    migration_id: str = ""
    started: float = 0.0
    frozen: float = 0.0
    finished: float = 0.0
    keys_copied: int = 0
    keys_total: int = 0
    attempts: int = 0
    #: The transition epoch of this migration of the slot (its START and COMPLETE carry it).
    epoch: int = 0

    def __post_init__(self) -> None:
        phases = OUT_PHASES if self.role == "out" else IN_PHASES if self.role == "in" else ()
        if self.phase not in phases:
            raise ValueError(f"slot {self.slot}: phase {self.phase!r} for role {self.role!r}")

    def to_json(self) -> bytes:
        # Written several times per slot: formatted directly (what json.dumps would write for
        # these fields, a few times faster); strings escaped by json's own encoder.
        return _SLOT_JSON % (
            self.slot,
            _json_text(self.role),
            self.peer,
            _json_text(self.phase),
            _json_text(self.migration_id),
            _json_float(self.started),
            _json_float(self.frozen),
            _json_float(self.finished),
            self.keys_copied,
            self.keys_total,
            self.attempts,
            self.epoch,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> SlotRecord:
        return cls(**json.loads(raw))

    def evolve(self, **changes: Any) -> SlotRecord:
        """A copy with ``changes`` (``dataclasses.replace`` without its per-call cost: a slot's
        record changes several times per migration)."""
        unknown = changes.keys() - _SLOT_FIELD_SET
        if unknown:
            raise TypeError(f"SlotRecord has no fields {sorted(unknown)}")
        new = object.__new__(SlotRecord)
        new.__dict__.update(self.__dict__, **changes)
        new.__post_init__()
        return new


_SLOT_FIELDS = tuple(f.name for f in fields(SlotRecord))
_SLOT_FIELD_SET = frozenset(_SLOT_FIELDS)
_SLOT_JSON = (
    b'{"slot":%d,"role":%b,"peer":%d,"phase":%b,"migration_id":%b,"started":%b,"frozen":%b,'
    b'"finished":%b,"keys_copied":%d,"keys_total":%d,"attempts":%d,"epoch":%d}'
)
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_UNWATCH = b"*1\r\n$7\r\nUNWATCH\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def _json_text(text: str) -> bytes:
    # Memoized: a wave's records share their role, phase and migration id.
    return _json_str(text).encode()


def _json_float(x: float) -> bytes:
    # A wave's records share their timestamps (one ``now`` per phase); 0.0 and -0.0 are
    # equal keys of a cache but not the same text, so zeros are not cached.
    return _json_float_cached(x) if x else repr(x).encode()


@functools.lru_cache(maxsize=256)
def _json_float_cached(x: float) -> bytes:
    return repr(x).encode()


@dataclass
class MigrationRecord:
    migration_id: str
    target_id: int
    target_control: str
    target_data: str
    service: str
    #: Inclusive ranges of the slots asked for.
    slots: list[tuple[int, int]]
    batch_keys: int
    rate_keys_per_second: int
    parallel_slots: int
    #: RUNNING, ABORTING, ABORTED, FAILED, DONE, FINALIZED
    state: str = "RUNNING"
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    #: Slots the target owned already when the migration started (not moved by it).
    skipped: list[tuple[int, int]] = field(default_factory=list)
    #: How the target reaches this (source) agent's control service, for pulls.
    source_control: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> MigrationRecord:
        data = json.loads(raw)
        data["slots"] = [tuple(r) for r in data["slots"]]
        data["skipped"] = [tuple(r) for r in data.get("skipped", [])]
        return cls(**data)

    def slot_set(self) -> list[int]:
        return [s for lo, hi in self.slots for s in range(lo, hi + 1)]

    def same_request(self, other: MigrationRecord) -> bool:
        """True when ``other`` asks for the same migration (parameters that define it)."""
        return (
            self.target_id,
            self.target_control,
            self.slots,
        ) == (other.target_id, other.target_control, other.slots)


@dataclass(eq=False)
class _Change:
    """One caller's part of a group commit."""

    slots: dict[int, SlotRecord | None] | None
    owned: dict[int, bool] | None
    migration: MigrationRecord | None
    then: Callable[[], None] | None
    done: asyncio.Future[None]


class StoreDataLost(RuntimeError):
    """The liveness key is gone from Redis: its data (and so the agent's) is lost; nothing was
    written."""


class MigrationStore:
    def __init__(
        self,
        client: Any,
        keyspace: int,
        server_id: int,
        table: SlotTable,
        redis_target: RedisTarget | None = None,
        alive_key: bytes | None = None,
    ) -> None:
        self._client = client
        #: Written only while this key exists (module docstring); None: unguarded.
        self.alive_key = alive_key
        #: Called (once per failed write) when a write found the data lost.
        self.on_lost: Callable[[], None] | None = None
        self._keyspace = keyspace
        self._server_id = server_id
        self._table = table
        #: With a target, writes go over a raw RESP connection of the store's own (a write
        #: carries a record per slot of a wave: redis-py's per-argument cost shows), else
        #: through ``client``'s pipeline. Loads always use ``client``.
        self.redis_target = redis_target
        self._conn: RespConnection | None = None
        self._pending: list[_Change] = []
        self._writer: asyncio.Task[None] | None = None
        #: MULTI/EXEC round trips so far (each carries one or more changes).
        self.writes = 0
        #: slot -> highest epoch used or accepted here (EPOCHS_KEY; :meth:`load_epochs`).
        self._epochs: dict[int, int] = {}

    def epoch(self, slot: int) -> int:
        """The highest transition epoch of ``slot`` this agent used or accepted (0: none)."""
        return self._epochs.get(slot, 0)

    def epochs(self) -> dict[int, int]:
        """slot -> the highest transition epoch used or accepted here, as persisted."""
        return dict(self._epochs)

    def next_epoch(self, slot: int) -> int:
        """The epoch for a new migration of ``slot`` away from here: above every transition
        of it this agent has seen, and so (this agent owning it) above the switch's."""
        return self._epochs.get(slot, 0) + 1

    async def load_epochs(self) -> dict[int, int]:
        raw: dict[bytes, bytes] = await self._client.hgetall(EPOCHS_KEY)
        self._epochs = {int(k): int(v) for k, v in raw.items()}
        return dict(self._epochs)

    async def load_slots(self) -> dict[int, SlotRecord]:
        raw: dict[bytes, bytes] = await self._client.hgetall(SLOT_RECORDS_KEY)
        return {int(k): SlotRecord.from_json(v) for k, v in raw.items()}

    async def load_migrations(self) -> dict[str, MigrationRecord]:
        raw: dict[bytes, bytes] = await self._client.hgetall(MIGRATIONS_KEY)
        return {k.decode(): MigrationRecord.from_json(v) for k, v in raw.items()}

    async def persist(
        self,
        *,
        slots: dict[int, SlotRecord | None] | None = None,
        owned: dict[int, bool] | None = None,
        migration: MigrationRecord | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """One atomic write: slot records (None deletes), ownership bits, a migration record.

        ``owned`` overrides the in-memory table for the bits of those slots: the caller
        persists the state it is *about* to enter, and enters it in ``then``, which runs once
        the write succeeded and before any later write computes its bitmap (so that bitmap
        includes it). Concurrent calls share one write (module docstring); a caller that is
        cancelled while its change is queued or in flight does not withdraw it: ``then`` still
        runs when the write succeeds, so memory follows what Redis holds.
        """
        change = _Change(slots, owned, migration, then, asyncio.get_running_loop().create_future())
        self._pending.append(change)
        if self._writer is None or self._writer.done():
            # Started as a task: it runs after the current turn of the event loop, so every
            # change asked for in this turn joins the first write.
            self._writer = asyncio.create_task(self._write_pending(), name="migration-store")
        await change.done

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                batch += self._pending
                self._pending = []
                for c in batch:
                    c.done.cancel()
                raise
            except Exception as e:
                for c in batch:
                    if not c.done.done():
                        c.done.set_exception(e)
                if isinstance(e, StoreDataLost) and self.on_lost is not None:
                    self.on_lost()
                continue
            for c in batch:
                try:
                    if c.then is not None:
                        c.then()
                except Exception as e:  # that caller's error; the others' writes stand
                    if not c.done.done():
                        c.done.set_exception(e)
                    continue
                if not c.done.done():
                    c.done.set_result(None)

    async def _write(self, batch: list[_Change]) -> None:
        owned: dict[int, bool] = {}
        records: dict[int, SlotRecord | None] = {}
        migrations: dict[str, MigrationRecord] = {}
        for c in batch:  # in order: a later change of the same slot wins
            if c.owned:
                owned.update(c.owned)
            if c.slots:
                records.update(c.slots)
            if c.migration is not None:
                migrations[c.migration.migration_id] = c.migration
        epochs = {
            slot: rec.epoch
            for slot, rec in records.items()
            if rec is not None and rec.epoch > self._epochs.get(slot, 0)
        }
        if self.redis_target is not None:
            await self._write_raw(owned, records, migrations, epochs)
        else:
            await self._write_pipeline(owned, records, migrations, epochs)
        self._epochs.update(epochs)

    async def _write_pipeline(
        self,
        owned: dict[int, bool],
        records: dict[int, SlotRecord | None],
        migrations: dict[str, MigrationRecord],
        epochs: dict[int, int],
    ) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            if self.alive_key is not None:
                await pipe.watch(self.alive_key)
                if not await pipe.exists(self.alive_key):
                    await pipe.unwatch()
                    raise self._lost()
                pipe.multi()
            self._queue(pipe, owned, records, migrations, epochs)
            if len(pipe):
                self.writes += 1
                try:
                    await pipe.execute()
                except redis.exceptions.WatchError:
                    raise self._lost() from None

    def _lost(self) -> StoreDataLost:
        assert self.alive_key is not None
        return StoreDataLost(
            f"{self.alive_key.decode()} is gone from Redis: its data was lost (a restart "
            "without persistence, FLUSHALL or an eviction); nothing was written"
        )

    def _queue(
        self,
        pipe: Any,
        owned: dict[int, bool],
        records: dict[int, SlotRecord | None],
        migrations: dict[str, MigrationRecord],
        epochs: dict[int, int],
    ) -> None:
        if owned:
            pipe.hset(AGENT_STATE_KEY, b"owned", self._table.owned_bitmap(owned))
        put = {str(slot): rec.to_json() for slot, rec in records.items() if rec is not None}
        gone = [str(slot) for slot, rec in records.items() if rec is None]
        if put:
            pipe.hset(SLOT_RECORDS_KEY, mapping=put)
        if gone:
            pipe.hdel(SLOT_RECORDS_KEY, *gone)
        if migrations:
            pipe.hset(MIGRATIONS_KEY, mapping={mid: m.to_json() for mid, m in migrations.items()})
        if epochs:
            pipe.hset(EPOCHS_KEY, mapping={str(s): str(e) for s, e in epochs.items()})

    async def _write_raw(
        self,
        owned: dict[int, bool],
        records: dict[int, SlotRecord | None],
        migrations: dict[str, MigrationRecord],
        epochs: dict[int, int],
    ) -> None:
        commands: list[bytes] = []
        if owned:
            bitmap = self._table.owned_bitmap(owned)
            commands.append(command_of([b"HSET", AGENT_STATE_KEY, b"owned", bitmap]))
        put = [b"HSET", SLOT_RECORDS_KEY]
        gone = [b"HDEL", SLOT_RECORDS_KEY]
        for slot, rec in records.items():
            if rec is None:
                gone.append(b"%d" % slot)
            else:
                put += (b"%d" % slot, rec.to_json())
        for args in (put, gone):
            if len(args) > 2:
                commands.append(command_of(args))
        if migrations:
            args = [b"HSET", MIGRATIONS_KEY]
            for mid, m in migrations.items():
                args += (mid.encode(), m.to_json())
            commands.append(command_of(args))
        if epochs:
            args = [b"HSET", EPOCHS_KEY]
            for slot, epoch in epochs.items():
                args += (b"%d" % slot, b"%d" % epoch)
            commands.append(command_of(args))
        if not commands:
            return
        conn = self._conn
        if conn is None or not conn.is_open:
            assert self.redis_target is not None
            conn = self._conn = await RespConnection.open(
                self.redis_target, name="netmigrate-agent-store"
            )
        if self.alive_key is not None:
            watched = await conn.calls(
                command_of([b"WATCH", self.alive_key]) + command_of([b"EXISTS", self.alive_key]),
                2,
            )
            for reply in watched:
                if isinstance(reply, Exception):
                    raise reply
            if not watched[1]:
                await conn.calls(_UNWATCH, 1)
                raise self._lost()
        self.writes += 1
        replies = await conn.calls(_MULTI + b"".join(commands) + _EXEC, len(commands) + 2)
        # A command Redis refused when queued aborts the whole transaction (EXECABORT); one
        # that failed while executing is an error inside EXEC's answer.
        executed = replies[-1] if isinstance(replies[-1], list) else []
        for reply in (*replies, *executed):
            if isinstance(reply, Exception):
                raise reply
        if replies[-1] is None:  # the watched liveness key was touched: EXEC did nothing
            raise self._lost()

    def close(self) -> None:
        """Close the raw connection (a later write opens it again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
