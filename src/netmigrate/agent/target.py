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
from netmigrate.agent.migration_store import MigrationStore, SlotRecord
from netmigrate.agent.peers import Peers
from netmigrate.agent.reserved import dirty_key, is_reserved, marker_key
from netmigrate.agent.resp import ConnectionLost, ReplyError, command
from netmigrate.agent.restore import RESTORE_SCRIPT, Dump, eval_command, script_args
from netmigrate.agent.slots import Admission, SlotState, SlotTable
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
    completing: asyncio.Task[bool] | None = None


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
        inc.persisted = asyncio.ensure_future(self._persist_start(inc))
        self._tasks.add(inc.persisted)  # type: ignore[arg-type]
        inc.persisted.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]
        self._ack_when(inc.persisted, fields, addr)

    async def _persist_start(self, inc: Incoming) -> bool:
        slot = inc.slot
        try:
            await self._store.persist(
                slots={slot: SlotRecord(slot, "in", inc.source_id, "migrating", "", inc.started)}
            )
            pipe = self._admin.pipeline(transaction=False)
            pipe.delete(dirty_key(slot))
            pipe.set(marker_key(slot), str(inc.source_id))
            pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
            *_, stray = await pipe.execute()
            # This agent does not own the slot, so keys in it are leftovers (nobody serves
            # them); they must not survive next to the copied ones. The marker is counted.
            if int(stray) > 1:
                keys = await self._admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, stray)
                keys = [k for k in keys if not is_reserved(k)]
                if keys:
                    log.warning(
                        "slot %d: deleting %d stray keys before migrating in", slot, len(keys)
                    )
                    await self._admin.unlink(*keys)
        except Exception as e:
            log.error("slot %d: cannot persist MIGRATING_IN: %s", slot, e)
            if self._slots.get(slot) is inc:
                del self._slots[slot]
                self._table.set_state([slot], SlotState.NOT_OWNED)
                self._release(inc, busy="the target could not persist the migration")
            return False
        log.info("slot %d migrates in from server %d", slot, inc.source_id)
        return True

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
            inc.completing = self._spawn(self._complete(inc))
        self._ack_when(inc.completing, fields, addr)

    async def _complete(self, inc: Incoming) -> bool:
        slot = inc.slot
        try:
            assert inc.persisted is not None
            if not await inc.persisted:
                return False
            record = SlotRecord(
                slot, "in", inc.source_id, "cleanup", "", inc.started, 0, time.time()
            )
            cleaned: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            await self._store.persist(
                slots={slot: record},
                owned={slot: True},
                then=lambda: self._become_owner(inc, cleaned),
            )
            reply = await cleaned
            if isinstance(reply, Exception):
                # The data connection dropped: nothing queued before can still run.
                await self._admin.delete(dirty_key(slot), marker_key(slot))
            await self._store.persist(slots={slot: None})
        except Exception as e:
            log.error("slot %d: completing the migration failed: %s", slot, e)
            inc.completing = None
            return self._table.state(slot) == SlotState.OWNED
        log.info("slot %d is owned here now (from server %d)", slot, inc.source_id)
        return True

    def _become_owner(self, inc: Incoming, cleaned: asyncio.Future[Any]) -> None:
        """OWNED, in one step of the event loop: requests from now on are plain requests.

        The bookkeeping keys are deleted through the data-path connection, so any pull's
        restore queued before (a request that saw MIGRATING_IN) runs before they go.
        """
        slot = inc.slot
        self._table.set_state([slot], SlotState.OWNED)
        del self._slots[slot]

        def on_reply(reply: Any, _: Any) -> None:
            if not cleaned.done():
                cleaned.set_result(reply)

        self._dp.flush([command(b"DEL", dirty_key(slot), marker_key(slot))], [(on_reply, None)])
        self._release(inc)

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
            if key in inc.authoritative and key not in chains:
                entry = dp.begin(fields, addr)
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
        entry = dp.begin(fields, addr)
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

    async def transfer_ids(self, request: control_pb2.TransferRequestIdsRequest) -> int:
        inc = self._incoming_from(request.slot, request.source_id)
        assert inc.persisted is not None
        if not await inc.persisted or not self._still_in(inc):
            raise NotMigratingIn(f"slot {request.slot} is not persisted as migrating in")
        dedup = self._dp.dedup
        installed = sum(dedup.install(e.request_id, request.slot, e.reply) for e in request.entries)
        self.counters["target_ids_installed"] += installed
        if request.source_control:
            inc.source_control = request.source_control
        if not inc.ids_received:
            inc.ids_received = True
            self._release(inc)
        return installed

    async def restore_batch(self, slot: int, source: int, dumps: list[Dump]) -> tuple[int, int]:
        """Restore copied keys (skipping dirty ones); (restored, skipped)."""
        inc = self._incoming_from(slot, source)
        present = [d for d in dumps if d.payload is not None]
        if not present:
            return 0, 0
        reply = await self._admin.eval(RESTORE_SCRIPT, *script_args(slot, present))
        restored, skipped = int(reply[0]), int(reply[1])
        if restored < 0:
            raise NotMigratingIn(f"slot {slot} has no migration marker here")
        if self._still_in(inc):
            inc.authoritative.update(d.key for d in present)
        self.counters["target_keys_restored"] += restored
        self.counters["target_keys_skipped_dirty"] += skipped
        return restored, skipped

    def states(self) -> list[tuple[int, int]]:
        """(slot, source id) of every slot migrating in."""
        return [(s, inc.source_id) for s, inc in sorted(self._slots.items())]
