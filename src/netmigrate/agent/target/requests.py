"""Client requests for a slot that migrates in (admitted by the SlotTable as TARGET).

- a write or delete marks its keys dirty in the same script that applies it, and makes the
  target authoritative for them: **writes win over copies**;
- a request that needs the old value of a key the target has no authoritative copy of first
  pulls it from the source (priority pull); it and every later request on one of its keys run
  in arrival order, one after the other (**per-key chains**: a pull and the write that needed
  it are one step);
- a double-read GET is answered from Redis when the target is authoritative for the key (OK or
  NOT_FOUND: a dirty, absent key is a tombstone), else MISS, and the client takes the source's
  frozen answer. MGET (and a plain read) pulls what it lacks, then answers;
- until the source's request ids arrived, requests wait in the hold queue;
- generic commands (CMD_READ / CMD_WRITE) follow the same rules with their keys from the
  command table: a double read answers only when the target is authoritative for every key
  it names, a write first pulls the keys it names that are not authoritative, and only the
  keys of commands that succeeded become authoritative (the write script reports them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.commands import OpSpec
from netmigrate.agent.generic import GenericRequest
from netmigrate.agent.reserved import dirty_key
from netmigrate.agent.resp import ConnectionLost, ReplyError
from netmigrate.agent.restore import Dump, eval_command
from netmigrate.agent.slots import Admission
from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.holding import HoldQueue
from netmigrate.agent.target.model import Incoming, PullFailed
from netmigrate.protocol.codec import HeaderFields
from netmigrate.protocol.constants import F_FLAGS, F_OP, F_SLOT, Flag, Op, SetCondition, Status

log = logging.getLogger(__name__)

_DOUBLE_READ = int(Flag.DOUBLE_READ)
_GET = int(Op.GET)
_MGET = int(Op.MGET)
_SET = int(Op.SET)
_NEEDS_OLD_VALUE = frozenset({int(Op.INCRBY), int(Op.DEL), _MGET, _GET})
_PULL_TIMEOUT = 3.0


class IncomingRequests:
    def __init__(self, ctx: TargetContext, holds: HoldQueue) -> None:
        self._ctx = ctx
        self._holds = holds
        #: key -> the future of the last request waiting on it (a pull in progress).
        self.chains: dict[bytes, asyncio.Future[None]] = {}

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
        inc = self._ctx.slots[fields[F_SLOT]]
        if spec.generic:
            self._handle_generic(inc, fields, body, spec, data, addr, commands, callbacks)
            return
        op = fields[F_OP]
        keys: tuple[bytes, ...] = spec.keys(body)
        chains = self.chains
        dp = self._ctx.dp
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
                self._ctx.counters["target_double_read_miss"] += 1
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
                self._ctx.counters["target_double_read_miss"] += 1
                dp.refuse(
                    fields, addr, int(Status.MISS), "the target has no authoritative copy yet"
                )
                return
            self._holds.hold(inc, fields, data, addr)
            return
        needs_pull = op in _NEEDS_OLD_VALUE or (
            op == _SET and body.condition != SetCondition.ALWAYS
        )
        pull = [k for k in keys if k not in inc.authoritative] if needs_pull else []
        entry = dp.begin(fields, addr, data)
        if entry is None:
            return
        if pull or any(k in chains for k in keys):
            self._ctx.spawn(self._deferred(inc, fields, body, spec, entry, keys, pull))
            return
        self._queue(inc, fields, body, spec, entry, keys, commands, callbacks)

    def _handle_generic(
        self,
        inc: Incoming,
        fields: HeaderFields,
        request: GenericRequest,
        spec: OpSpec,
        data: bytes,
        addr: Any,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        keys = request.keys
        dp = self._ctx.dp
        if spec.read_only and fields[F_FLAGS] & _DOUBLE_READ:
            # As for GET: every acknowledged write of these keys was applied here, so only an
            # answer from keys that are all authoritative can be newer than the source's.
            if all(k in inc.authoritative for k in keys):
                entry = dp.begin(fields, addr, data)
                if entry is not None:
                    dp.queue_generic(fields, request, entry, commands, callbacks)
            else:
                self._ctx.counters["target_double_read_miss"] += 1
                dp.refuse(
                    fields, addr, int(Status.MISS), "the target has no authoritative copy yet"
                )
            return
        if not inc.ids_received or inc.held:
            self._holds.hold(inc, fields, data, addr)
            return
        pull = [k for k in request.keys_needing_old_value() if k not in inc.authoritative]
        entry = dp.begin(fields, addr, data)
        if entry is None:
            return
        if pull or any(k in self.chains for k in keys):
            self._ctx.spawn(self._deferred(inc, fields, request, spec, entry, keys, pull))
            return
        self._queue(inc, fields, request, spec, entry, keys, commands, callbacks)

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
            self._queue_plain(fields, body, spec, entry, commands, callbacks)
            return
        inc.writes += 1  # counted when queued: Redis may apply it whatever the reply
        if spec.generic:
            self._ctx.dp.queue_generic(
                fields,
                body,
                entry,
                commands,
                callbacks,
                dirty=dirty_key(inc.slot),
                # Only the keys of commands Redis applied: a failed command changed nothing.
                on_applied=inc.authoritative.update,
            )
            return
        self._ctx.dp.queue(
            fields,
            spec,
            entry,
            spec.command(body),
            commands,
            callbacks,
            dirty=dirty_key(inc.slot),
            keys=keys,
            # Authoritative once Redis applied it, not when queued: a write Redis refuses (OOM,
            # MISCONF, a dropped connection) changed nothing, and the source's value is still
            # the current one. Until the answer, a double read of these keys is a MISS: the
            # write is not acknowledged yet, so the source's older value is a valid answer.
            on_applied=lambda: inc.authoritative.update(keys),
        )

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
        chains = self.chains
        before = {chains[k] for k in keys if k in chains}
        for k in keys:
            chains[k] = mine
        try:
            for f in before:
                await f
            slot = inc.slot
            if self._ctx.still_in(inc):
                need = [k for k in pull if k not in inc.authoritative]
                if need:
                    dumps = await self._pull(inc, need)
                    if self._ctx.still_in(inc):
                        await self._restore_pulled(inc, dumps)
                        inc.authoritative.update(need)
            commands: list[bytes] = []
            callbacks: list[Any] = []
            if self._ctx.still_in(inc):
                self._queue(inc, fields, body, spec, entry, keys, commands, callbacks)
            elif self._ctx.table.admit(slot, fields[F_OP], fields[F_FLAGS]) is Admission.SERVE:
                # The slot completed meanwhile: every key was copied, it is a plain request.
                self._queue_plain(fields, body, spec, entry, commands, callbacks)
            else:
                self._ctx.dp.fail(fields, entry, int(Status.BUSY), f"slot {slot} changed state")
            self._ctx.dp.flush(commands, callbacks)
        except PullFailed as e:
            self._ctx.counters["target_pull_failures"] += 1
            self._ctx.dp.fail(fields, entry, int(Status.BUSY), str(e))
        except Exception as e:
            log.exception("slot %d: deferred request failed", inc.slot)
            self._ctx.dp.fail(
                fields, entry, int(Status.BUSY), f"the target could not apply it: {e}"
            )
        finally:
            mine.set_result(None)
            for k in keys:
                if chains.get(k) is mine:
                    del chains[k]

    def _queue_plain(
        self,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        entry: Any,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """Queue the request as an owner runs it (no dirty mark)."""
        if spec.generic:
            self._ctx.dp.queue_generic(fields, body, entry, commands, callbacks)
        else:
            self._ctx.dp.queue(fields, spec, entry, spec.command(body), commands, callbacks)

    async def _pull(self, inc: Incoming, keys: list[bytes]) -> list[Dump]:
        self._ctx.counters["target_pulls"] += 1
        if not inc.source_control:
            raise PullFailed(f"slot {inc.slot}: the source's control address is not known yet")
        stub = self._ctx.peers.stub(inc.source_control)
        request = control_pb2.PullRequest(slot=inc.slot, target_id=self._ctx.server_id, keys=keys)
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

        self._ctx.dp.flush([eval_command(inc.slot, dumps)], [(on_reply, None)])
        reply = await done
        if isinstance(reply, ConnectionLost | ReplyError) or not isinstance(reply, list):
            raise PullFailed(f"restoring pulled keys of slot {inc.slot} failed: {reply}")
        if reply[0] < 0:
            raise PullFailed(f"slot {inc.slot} is no longer migrating in")
        self._ctx.counters["target_keys_restored"] += reply[0]
        self._ctx.counters["target_keys_skipped_dirty"] += reply[1]
