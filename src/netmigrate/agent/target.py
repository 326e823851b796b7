"""The migration target's side (docs/migration.md, "Rules at the target while MIGRATING_IN").

For every slot that migrates in, the target keeps:

- **the dirty set** in Redis (``__netmigrate__:{tag}:dirty``, inside the slot): every client
  write or delete at the target adds its keys in the same MULTI/EXEC, so a write and its mark
  are one step and survive a crash of the agent;
- **authority** in memory: the keys whose current state the target has (written here, copied,
  or pulled). After a restart only the dirty keys count until the source copies again;
- **the hold queue**: client requests (other than double-read GETs) wait until the source's
  recent request ids arrived, so a write the source applied and a client retried here is
  answered from those ids, not applied twice. Bounded: BUSY when full or held too long;
- **per-key chains**: a request that must first pull a key from the source (it needs the old
  value and the target is not authoritative) and every later request on one of its keys run in
  arrival order, one after the other (a pull and the write that needed it are one step).

Double reads: a GET copy (DOUBLE_READ) is answered from Redis when the target is authoritative
for the key (OK or NOT_FOUND: a dirty, absent key is a tombstone), else MISS, and the client
takes the source's frozen answer. MGET (and a plain read) pulls what it lacks, then answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.commands import OpSpec
from netmigrate.agent.dedup import record_replies
from netmigrate.agent.migration_store import MigrationStore, SlotRecord
from netmigrate.agent.peers import Peers
from netmigrate.agent.reserved import dirty_key, is_reserved, marker_key
from netmigrate.agent.resp import ConnectionLost, ReplyError, collect_replies, command
from netmigrate.agent.restore import Dump, eval_command
from netmigrate.agent.slots import Admission, SlotState, SlotTable, to_ranges
from netmigrate.protocol.codec import Empty, HeaderFields, encode_reply
from netmigrate.protocol.constants import (
    F_FLAGS,
    F_OP,
    F_SLOT,
    F_SOURCE_ID,
    F_TARGET_ID,
    Flag,
    Op,
    SetCondition,
    Status,
)

if TYPE_CHECKING:
    from netmigrate.agent.datapath import DataPath

log = logging.getLogger(__name__)

_DOUBLE_READ = int(Flag.DOUBLE_READ)
_GET = int(Op.GET)
_MGET = int(Op.MGET)
_SET = int(Op.SET)
_NEEDS_OLD_VALUE = frozenset({int(Op.INCRBY), int(Op.DEL), _MGET, _GET})
_PULL_TIMEOUT = 3.0
_SWEEP_INTERVAL = 0.05


class PullFailed(Exception):
    pass


class NotMigratingIn(Exception):
    """A copy, id transfer or pull for a slot that does not migrate in from that source."""


@dataclass
class _Held:
    since: float
    fields: HeaderFields
    data: bytes
    addr: Any


@dataclass(eq=False)
class Incoming:
    slot: int
    source_id: int
    started: float
    ids_received: bool = False
    source_control: str = ""
    authoritative: set[bytes] = field(default_factory=set)
    held: deque[_Held] = field(default_factory=deque)
    #: Done once MIGRATING_IN is persisted (the START may be acknowledged then).
    persisted: asyncio.Future[bool] | None = None
    #: Done once the slot is owned here (True) or its completion failed (False).
    completing: asyncio.Future[bool] | None = None


class TargetSide:
    def __init__(
        self,
        *,
        datapath: DataPath,
        table: SlotTable,
        store: MigrationStore,
        admin: Any,
        peers: Peers,
        server_id: int,
        hold_limit: int = 10_000,
        hold_timeout: float = 1.0,
    ) -> None:
        self._dp = datapath
        self._table = table
        self._store = store
        self._admin = admin
        self._peers = peers
        self._server_id = server_id
        self.hold_limit = hold_limit
        self.hold_timeout = hold_timeout
        self._slots: dict[int, Incoming] = {}
        self._chains: dict[bytes, asyncio.Future[None]] = {}
        self._held = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: Slots whose START arrived and whose entry is not persisted yet: persisted together
        #: (a wave of STARTs arrives back to back).
        self._starting: list[Incoming] = []
        self._starter: asyncio.Task[None] | None = None
        #: Likewise for COMPLETEs.
        self._completing: list[Incoming] = []
        self._completer: asyncio.Task[None] | None = None
        #: Counters for GetStats.
        self.counters: dict[str, int] = {
            "target_double_read_miss": 0,
            "target_held": 0,
            "target_hold_busy": 0,
            "target_pulls": 0,
            "target_pull_failures": 0,
            "target_keys_restored": 0,
            "target_keys_skipped_dirty": 0,
            "target_ids_installed": 0,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self, records: dict[int, SlotRecord]) -> None:
        """Restore slots migrating in after a restart (their dirty marks are authority)."""
        loop = asyncio.get_running_loop()
        for slot, rec in sorted(records.items()):
            if rec.role != "in":
                continue
            if rec.phase == "cleanup":
                await self._admin.delete(dirty_key(slot), marker_key(slot))
                await self._store.persist(slots={slot: None})
                self._table.set_state([slot], SlotState.OWNED)
                continue
            inc = Incoming(slot, rec.peer, rec.started)
            dirty = await self._admin.smembers(dirty_key(slot))
            inc.authoritative.update(dirty)
            await self._admin.set(marker_key(slot), str(rec.peer), nx=True)
            inc.persisted = loop.create_future()
            inc.persisted.set_result(True)
            self._slots[slot] = inc
            self._table.set_state([slot], SlotState.MIGRATING_IN)
            log.info(
                "slot %d migrates in from server %d (%d keys marked dirty); waiting for the "
                "source's request ids",
                slot,
                rec.peer,
                len(dirty),
            )

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_held(), name="target-hold-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def incoming(self) -> list[Incoming]:
        return [self._slots[s] for s in sorted(self._slots)]

    # -- SLOT_START / SLOT_COMPLETE ------------------------------------------------------

    def on_transition(self, fields: HeaderFields, addr: Any) -> None:
        """A SLOT_START or SLOT_COMPLETE request, in arrival order with client requests."""
        slot, source, target = fields[F_SLOT], fields[F_SOURCE_ID], fields[F_TARGET_ID]
        name = Op(fields[F_OP]).name
        if target != self._server_id:
            message = f"{name} names target {target}, this is server {self._server_id}"
            self._dp.refuse(fields, addr, int(Status.BAD_REQUEST), message)
            return
        if source in (0, self._server_id):
            self._dp.refuse(fields, addr, int(Status.BAD_REQUEST), f"{name} from server {source}")
            return
        if fields[F_OP] == Op.SLOT_START:
            self._on_start(fields, addr, slot, source)
        else:
            self._on_complete(fields, addr, slot, source)

    def _ack_when(self, future: asyncio.Future[bool], fields: HeaderFields, addr: Any) -> None:
        def done(f: asyncio.Future[bool]) -> None:
            if f.cancelled() or f.exception() is not None or not f.result():
                return  # not persisted: the source resends
            self._dp.send_to(encode_reply(fields, int(Status.OK), Empty()), addr)

        if future.done():
            done(future)
        else:
            future.add_done_callback(done)

    def _on_start(self, fields: HeaderFields, addr: Any, slot: int, source: int) -> None:
        state = self._table.state(slot)
        inc = self._slots.get(slot)
        if state == SlotState.MIGRATING_IN and inc is not None:
            if inc.source_id != source:
                message = f"slot {slot} migrates in from server {inc.source_id}, not {source}"
                self._dp.refuse(fields, addr, int(Status.ERROR), message)
                return
            assert inc.persisted is not None
            self._ack_when(inc.persisted, fields, addr)
            return
        if state != SlotState.NOT_OWNED:
            why = {
                SlotState.MOVED: "it moved away from here and is not finalized yet",
            }.get(state, f"it is {state.name} here")
            self._dp.refuse(
                fields, addr, int(Status.ERROR), f"slot {slot} cannot migrate in: {why}"
            )
            return
        # Enter MIGRATING_IN now, in arrival order: every client request for the slot that
        # comes after the START is held until the source's request ids arrive, which is
        # after the acknowledgement, which is after the state is persisted.
        inc = Incoming(slot, source, time.time())
        self._slots[slot] = inc
        self._table.set_state([slot], SlotState.MIGRATING_IN)
        inc.persisted = asyncio.get_running_loop().create_future()
        self._starting.append(inc)
        if self._starter is None or self._starter.done():
            # Runs after this batch of datagrams: the STARTs of a wave are entered together.
            self._starter = self._spawn(self._persist_starts())
        self._ack_when(inc.persisted, fields, addr)

    async def _persist_starts(self) -> None:
        """Persist the slots that entered MIGRATING_IN, a group at a time; each one's
        ``persisted`` says whether it may be acknowledged."""
        batch: list[Incoming] = []
        try:
            while self._starting:
                batch, self._starting = self._starting, []
                try:
                    await self._enter(batch)
                except Exception as e:
                    log.error(
                        "slots %s: cannot persist MIGRATING_IN: %s", [i.slot for i in batch], e
                    )
                    for inc in batch:
                        if self._slots.get(inc.slot) is inc:
                            del self._slots[inc.slot]
                            self._table.set_state([inc.slot], SlotState.NOT_OWNED)
                            self._release(inc, busy="the target could not persist the migration")
                        inc.persisted.set_result(False)  # type: ignore[union-attr]
                    continue
                _log_slots("migrate in from", batch)
                for inc in batch:
                    inc.persisted.set_result(True)  # type: ignore[union-attr]
        except asyncio.CancelledError:  # stopping: nothing will acknowledge these
            for inc in batch + self._starting:
                if inc.persisted is not None and not inc.persisted.done():
                    inc.persisted.cancel()
            raise

    async def _enter(self, batch: list[Incoming]) -> None:
        """Persist the slots' records (one write), then reset their bookkeeping keys (one
        round trip on the data connection)."""
        await self._store.persist(
            slots={
                inc.slot: SlotRecord(inc.slot, "in", inc.source_id, "migrating", "", inc.started)
                for inc in batch
            }
        )
        commands = []
        for inc in batch:
            slot = inc.slot
            commands += [
                command(b"DEL", dirty_key(slot)),
                command(b"SET", marker_key(slot), b"%d" % inc.source_id),
                command(b"CLUSTER", b"COUNTKEYSINSLOT", b"%d" % slot),
            ]
        replies = await self._redis(commands)
        for inc, stray in zip(batch, replies[2::3], strict=True):
            # This agent does not own the slot, so keys in it are leftovers (nobody serves
            # them); they must not survive next to the copied ones. The marker is counted.
            if stray > 1:
                slot = inc.slot
                keys = await self._admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, stray)
                keys = [k for k in keys if not is_reserved(k)]
                if keys:
                    log.warning(
                        "slot %d: deleting %d stray keys before migrating in", slot, len(keys)
                    )
                    await self._admin.unlink(*keys)

    async def _redis(self, commands: list[bytes]) -> list[Any]:
        """Run commands on the data connection (queued behind every request before them) and
        return their replies; a Redis error or a lost connection raises."""
        callbacks, done = collect_replies(len(commands))
        self._dp.flush(commands, callbacks)
        replies = await done
        for reply in replies:
            if isinstance(reply, ConnectionLost | ReplyError):
                raise reply
        return replies

    def _on_complete(self, fields: HeaderFields, addr: Any, slot: int, source: int) -> None:
        state = self._table.state(slot)
        inc = self._slots.get(slot)
        if state == SlotState.OWNED and inc is None:
            # A resent COMPLETE (the acknowledgement got lost): nothing to do but confirm.
            self._dp.send_to(encode_reply(fields, int(Status.OK), Empty()), addr)
            return
        if state != SlotState.MIGRATING_IN or inc is None or inc.source_id != source:
            message = f"slot {slot} does not migrate in from server {source} ({state.name} here)"
            self._dp.refuse(fields, addr, int(Status.ERROR), message)
            return
        if inc.completing is None:
            inc.completing = asyncio.get_running_loop().create_future()
            self._completing.append(inc)
            if self._completer is None or self._completer.done():
                self._completer = self._spawn(self._complete_all())
        self._ack_when(inc.completing, fields, addr)

    async def _complete_all(self) -> None:
        """Complete the slots whose COMPLETE arrived, a group at a time."""
        batch: list[Incoming] = []
        try:
            while self._completing:
                batch, self._completing = self._completing, []
                await self._complete(batch)
        except asyncio.CancelledError:  # stopping: nothing will acknowledge these
            for inc in batch + self._completing:
                if inc.completing is not None and not inc.completing.done():
                    inc.completing.cancel()
            raise

    async def _complete(self, batch: list[Incoming]) -> None:
        """OWNED for every slot of ``batch`` (one persisted change), then their bookkeeping
        keys deleted and their records dropped; each slot's ``completing`` says whether it
        may be acknowledged."""

        def finish(inc: Incoming, owned: bool) -> None:
            future = inc.completing
            if not owned:
                inc.completing = None  # a resent COMPLETE tries again
            if future is not None and not future.done():
                future.set_result(owned)

        ready: list[Incoming] = []
        for inc in batch:
            assert inc.persisted is not None
            if await inc.persisted and self._still_in(inc):
                ready.append(inc)
            else:
                finish(inc, False)
        if not ready:
            return
        slots = [inc.slot for inc in ready]
        now = time.time()
        records: dict[int, SlotRecord | None] = {
            inc.slot: SlotRecord(inc.slot, "in", inc.source_id, "cleanup", "", inc.started, 0, now)
            for inc in ready
        }
        cleaned: list[asyncio.Future[list[Any]]] = []
        try:
            await self._store.persist(
                slots=records,
                owned=dict.fromkeys(slots, True),
                then=lambda: cleaned.append(self._become_owner(ready)),
            )
            replies = await cleaned[0]
            failed = [s for s, r in zip(slots, replies, strict=True) if isinstance(r, Exception)]
            for slot in failed:  # the data connection dropped: nothing queued before can run
                await self._admin.delete(dirty_key(slot), marker_key(slot))
            await self._store.persist(slots=dict.fromkeys(slots))
        except Exception as e:
            log.error("slots %s: completing the migration failed: %s", slots, e)
            for inc in ready:
                finish(inc, self._table.state(inc.slot) == SlotState.OWNED)
            return
        _log_slots("are owned here now, from", ready)
        for inc in ready:
            finish(inc, True)

    def _become_owner(self, incs: list[Incoming]) -> asyncio.Future[list[Any]]:
        """OWNED, in one step of the event loop: requests from now on are plain requests.
        Returns the future of the bookkeeping keys' deletion (a reply per slot).

        The bookkeeping keys are deleted through the data-path connection, so any pull's
        restore queued before (a request that saw MIGRATING_IN) runs before they go.
        """
        self._table.set_state([inc.slot for inc in incs], SlotState.OWNED)
        commands = []
        for inc in incs:
            del self._slots[inc.slot]
            commands.append(command(b"DEL", dirty_key(inc.slot), marker_key(inc.slot)))
        callbacks, cleaned = collect_replies(len(commands))
        self._dp.flush(commands, callbacks)
        for inc in incs:
            self._release(inc)
        return cleaned

    # -- the request path ----------------------------------------------------------------

    def handle(
        self,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        data: bytes,
        addr: Any,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """A data request for a slot that migrates in (admitted by SlotTable as TARGET)."""
        inc = self._slots[fields[F_SLOT]]
        op = fields[F_OP]
        keys: tuple[bytes, ...] = spec.keys(body)
        chains = self._chains
        dp = self._dp
        if op == _GET and fields[F_FLAGS] & _DOUBLE_READ:
            key = keys[0]
            # Authoritative even while a request waits on the key (a pull for an MGET of it
            # and others): every acknowledged write of it is queued before this read, and a
            # MISS would make the client take the source's frozen, older value.
            if key in inc.authoritative:
                entry = dp.begin(fields, addr, data)
                if entry is not None:
                    dp.queue(fields, spec, entry, spec.command(body), commands, callbacks)
            else:
                self.counters["target_double_read_miss"] += 1
                dp.refuse(
                    fields, addr, int(Status.MISS), "the target has no authoritative copy yet"
                )
            return
        if not inc.ids_received or inc.held:
            if (
                op == _MGET
                and fields[F_FLAGS] & _DOUBLE_READ
                and not any(k in inc.authoritative for k in keys)
            ):
                # Nothing here is newer than the source's copy yet (no write was applied for
                # this slot): the client may take the source's answer, no need to wait.
                self.counters["target_double_read_miss"] += 1
                dp.refuse(
                    fields, addr, int(Status.MISS), "the target has no authoritative copy yet"
                )
                return
            self._hold(inc, fields, data, addr)
            return
        needs_pull = op in _NEEDS_OLD_VALUE or (
            op == _SET and body.condition != SetCondition.ALWAYS
        )
        pull = [k for k in keys if k not in inc.authoritative] if needs_pull else []
        entry = dp.begin(fields, addr, data)
        if entry is None:
            return
        if pull or any(k in chains for k in keys):
            self._spawn(self._deferred(inc, fields, body, spec, entry, keys, pull))
            return
        self._queue(inc, fields, body, spec, entry, keys, commands, callbacks)

    def _queue(
        self,
        inc: Incoming,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        entry: Any,
        keys: tuple[bytes, ...],
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        if spec.read_only:
            self._dp.queue(fields, spec, entry, spec.command(body), commands, callbacks)
            return
        self._dp.queue(
            fields,
            spec,
            entry,
            spec.command(body),
            commands,
            callbacks,
            dirty=dirty_key(inc.slot),
            keys=keys,
        )
        # Queued behind every earlier command on the data connection: any later read of
        # these keys is queued behind the write, so the target may answer for them now.
        inc.authoritative.update(keys)

    async def _deferred(
        self,
        inc: Incoming,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        entry: Any,
        keys: tuple[bytes, ...],
        pull: list[bytes],
    ) -> None:
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[None] = loop.create_future()
        chains = self._chains
        before = {chains[k] for k in keys if k in chains}
        for k in keys:
            chains[k] = mine
        try:
            for f in before:
                await f
            slot = inc.slot
            if self._still_in(inc):
                need = [k for k in pull if k not in inc.authoritative]
                if need:
                    dumps = await self._pull(inc, need)
                    if self._still_in(inc):
                        await self._restore_pulled(inc, dumps)
                        inc.authoritative.update(need)
            commands: list[bytes] = []
            callbacks: list[Any] = []
            if self._still_in(inc):
                self._queue(inc, fields, body, spec, entry, keys, commands, callbacks)
            elif self._table.admit(slot, fields[F_OP], fields[F_FLAGS]) is Admission.SERVE:
                # The slot completed meanwhile: every key was copied, it is a plain request.
                self._dp.queue(fields, spec, entry, spec.command(body), commands, callbacks)
            else:
                self._dp.fail(fields, entry, int(Status.BUSY), f"slot {slot} changed state")
            self._dp.flush(commands, callbacks)
        except PullFailed as e:
            self.counters["target_pull_failures"] += 1
            self._dp.fail(fields, entry, int(Status.BUSY), str(e))
        except Exception as e:
            log.exception("slot %d: deferred request failed", inc.slot)
            self._dp.fail(fields, entry, int(Status.BUSY), f"the target could not apply it: {e}")
        finally:
            mine.set_result(None)
            for k in keys:
                if chains.get(k) is mine:
                    del chains[k]

    def _still_in(self, inc: Incoming) -> bool:
        return self._slots.get(inc.slot) is inc

    async def _pull(self, inc: Incoming, keys: list[bytes]) -> list[Dump]:
        self.counters["target_pulls"] += 1
        if not inc.source_control:
            raise PullFailed(f"slot {inc.slot}: the source's control address is not known yet")
        stub = self._peers.stub(inc.source_control)
        request = control_pb2.PullRequest(slot=inc.slot, target_id=self._server_id, keys=keys)
        try:
            reply = await stub.Pull(request, timeout=_PULL_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            raise PullFailed(
                f"priority pull of slot {inc.slot} from server {inc.source_id} failed: "
                f"{e.code().name}: {e.details()}"
            ) from None
        return [Dump(k.key, k.dump if k.present else None, k.pttl) for k in reply.keys]

    async def _restore_pulled(self, inc: Incoming, dumps: list[Dump]) -> None:
        """Restore pulled keys through the data connection and wait until Redis did it."""
        if not any(d.payload is not None for d in dumps):
            return
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Any, _: Any) -> None:
            if not done.done():
                done.set_result(reply)

        self._dp.flush([eval_command(inc.slot, dumps)], [(on_reply, None)])
        reply = await done
        if isinstance(reply, ConnectionLost | ReplyError) or not isinstance(reply, list):
            raise PullFailed(f"restoring pulled keys of slot {inc.slot} failed: {reply}")
        if reply[0] < 0:
            raise PullFailed(f"slot {inc.slot} is no longer migrating in")
        self.counters["target_keys_restored"] += reply[0]
        self.counters["target_keys_skipped_dirty"] += reply[1]

    # -- holding -------------------------------------------------------------------------

    def _hold(self, inc: Incoming, fields: HeaderFields, data: bytes, addr: Any) -> None:
        if self._held >= self.hold_limit:
            self.counters["target_hold_busy"] += 1
            message = f"slot {inc.slot} is waiting for the source's request ids (queue full)"
            self._dp.refuse(fields, addr, int(Status.BUSY), message)
            return
        self.counters["target_held"] += 1
        self._held += 1
        inc.held.append(_Held(time.monotonic(), fields, data, addr))

    def _release(self, inc: Incoming, busy: str | None = None) -> None:
        """Let the held requests run (in order), or answer them BUSY."""
        held, inc.held = inc.held, deque()
        self._held -= len(held)
        if busy is not None:
            for h in held:
                self._dp.refuse(h.fields, h.addr, int(Status.BUSY), busy)
            return
        if held:
            self._dp.replay((h.data, h.addr) for h in held)

    async def _sweep_held(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            limit = time.monotonic() - self.hold_timeout
            for inc in list(self._slots.values()):
                while inc.held and inc.held[0].since < limit:
                    h = inc.held.popleft()
                    self._held -= 1
                    self.counters["target_hold_busy"] += 1
                    message = f"slot {inc.slot} is waiting for the source's request ids"
                    self._dp.refuse(h.fields, h.addr, int(Status.BUSY), message)

    # -- from the source agent (gRPC) ----------------------------------------------------

    def _incoming_from(self, slot: int, source: int) -> Incoming:
        inc = self._slots.get(slot)
        if inc is None or inc.source_id != source:
            raise NotMigratingIn(f"slot {slot} does not migrate in from server {source} here")
        return inc

    async def transfer_ids(
        self, request: control_pb2.TransferRequestIdsRequest
    ) -> tuple[int, list[int]]:
        """Install the source's request ids of one slot or of several (``request.slots``: all
        of them or, when one does not migrate in from that source, none); (entries
        installed, the slots of a multi-slot request)."""
        if request.slots:
            items = [(p.slot, p.entries) for p in request.slots]
        else:
            items = [(request.slot, request.entries)]
        incs = [self._incoming_from(slot, request.source_id) for slot, _ in items]
        for inc in incs:
            assert inc.persisted is not None
            if not await inc.persisted:
                raise NotMigratingIn(f"slot {inc.slot} is not persisted as migrating in")
        # Recorded in Redis too, so a retry of a write the source applied is still caught
        # if this agent restarts before the client gives up (D16).
        await record_replies(
            self._admin,
            [(e.request_id, e.reply, e.fingerprint or None) for _, es in items for e in es],
        )
        for inc in incs:  # checked after the last wait: nothing changes until the end
            if not self._still_in(inc):
                raise NotMigratingIn(f"slot {inc.slot} no longer migrates in")
        dedup = self._dp.dedup
        installed = 0
        for (slot, entries), inc in zip(items, incs, strict=True):
            installed += sum(
                dedup.install(e.request_id, slot, e.reply, e.fingerprint or None) for e in entries
            )
            if request.source_control:
                inc.source_control = request.source_control
            if not inc.ids_received:
                inc.ids_received = True
                self._release(inc)
        self.counters["target_ids_installed"] += installed
        return installed, [slot for slot, _ in items] if request.slots else []

    async def restore_batch(self, slot: int, source: int, dumps: list[Dump]) -> tuple[int, int]:
        """Restore copied keys of one slot (skipping dirty ones); (restored, skipped)."""
        return await self.restore_parts(source, [(slot, dumps)])

    async def restore_parts(
        self, source: int, parts: list[tuple[int, list[Dump]]]
    ) -> tuple[int, int]:
        """Restore copied keys of one or more slots, one script per slot, all in one round trip
        on the data connection (so a pull's restore or a client write queued before runs
        first); (restored, skipped as dirty)."""
        incs = [self._incoming_from(slot, source) for slot, _ in parts]
        commands: list[bytes] = []
        applied: list[tuple[Incoming, list[Dump]]] = []
        for (slot, dumps), inc in zip(parts, incs, strict=True):
            present = [d for d in dumps if d.payload is not None]
            if present:
                commands.append(eval_command(slot, present))
                applied.append((inc, present))
        if not commands:
            return 0, 0
        replies = await self._redis(commands)
        restored = skipped = 0
        gone: list[int] = []
        for (inc, present), reply in zip(applied, replies, strict=True):
            n, dirty = int(reply[0]), int(reply[1])
            if n < 0:
                gone.append(inc.slot)
                continue
            if self._still_in(inc):
                inc.authoritative.update(d.key for d in present)
            restored += n
            skipped += dirty
        self.counters["target_keys_restored"] += restored
        self.counters["target_keys_skipped_dirty"] += skipped
        if gone:
            raise NotMigratingIn(f"slots {gone} have no migration marker here")
        return restored, skipped

    def states(self) -> list[tuple[int, int]]:
        """(slot, source id) of every slot migrating in."""
        return [(s, inc.source_id) for s, inc in sorted(self._slots.items())]


def _log_slots(what: str, incs: list[Incoming]) -> None:
    """One line per source for slots handled together: a line per slot was 32,768 lines
    and ~2 % of the target agent's CPU (py-spy) for a whole-keyspace migration."""
    by_source: dict[int, list[int]] = {}
    for inc in incs:
        by_source.setdefault(inc.source_id, []).append(inc.slot)
    for source, slots in sorted(by_source.items()):
        ranges = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in to_ranges(slots))
        log.info("slots %s (%d) %s server %d", ranges, len(slots), what, source)
