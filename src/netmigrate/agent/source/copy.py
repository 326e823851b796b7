"""The copy of frozen slots to the target (DUMP + PTTL of a batch of keys in one script call,
batches pipelined over one gRPC stream, each acknowledged), and the priority pulls of single
keys the target asks for."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.reserved import is_reserved
from netmigrate.agent.slots import SlotState
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.keys import BIG, add_dumps
from netmigrate.agent.source.model import RPC_TIMEOUT, Migration, MigrationRequestError, StepFailed

#: Copy batches in flight per stream (the stream's pipelining).
COPY_WINDOW = 4

log = logging.getLogger(__name__)


class Copier:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx

    async def copy(
        self, m: Migration, slots: list[int], prepaid: int | None = None, one_slot: bool = False
    ) -> None:
        """The copy of a wave: one stream, batches of at most ``batch_keys`` keys and about
        ``batch_bytes`` of DUMPs that may span slots (``CopyBatch.parts``), a key bigger than
        ``chunk_bytes`` in pieces (``CopyBatch.chunk``), up to COPY_WINDOW batches
        unacknowledged. ``prepaid``
        keys' worth of the rate limit was paid before the freeze; only keys beyond it wait.
        ``one_slot``: a slot on its own, in batches of the single-slot form (``CopyBatch.slot``
        and ``keys``), which every target takes (the path a wave falls back to)."""
        if not slots:
            return
        ctx = self._ctx
        listed = await ctx.keys.list_keys(slots)
        items: list[tuple[int, bytes]] = []
        for slot, keys in zip(slots, listed, strict=True):
            run = m.slots[slot]
            run.keys_total, run.keys_copied = len(keys), 0
            items += [(slot, k) for k in keys]
        assert m.limiter is not None
        covered = prepaid or 0
        if not items:
            return  # empty slots: no stream
        batch = m.record.batch_keys
        call = ctx.peers.stub(m.record.target_control).Copy()
        #: seq -> [(slot, keys of it in the batch)]
        outstanding: deque[tuple[int, list[tuple[int, int]]]] = deque()

        async def read_ack() -> None:
            ack = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
            if ack is grpc.aio.EOF:
                # An aborted stream can read as a plain end: the target's status says why.
                code = await call.code()
                why = "" if code == grpc.StatusCode.OK else f": {code.name}: {await call.details()}"
                raise StepFailed(f"the target closed the copy stream of slots {slots[0]}..{why}")
            seq, counts = outstanding.popleft()
            if ack.seq != seq or (one_slot and ack.slot != slots[0]):
                raise StepFailed(
                    f"copy of slots {slots[0]}..: acknowledgement {ack.seq}, expected {seq}"
                )
            for slot, n in counts:
                m.slots[slot].keys_copied += n
                m.keys_copied += n
                ctx.counters["source_keys_copied"] += n

        seqs = itertools.count(1)

        async def send(message: control_pb2.CopyBatch, counts: list[tuple[int, int]]) -> None:
            message.seq = next(seqs)
            try:
                await call.write(message)
            except asyncio.InvalidStateError:
                # The target ended the stream (it refused a batch): its reason, not grpc's
                # "RPC already finished", is what the slot's error must say.
                raise StepFailed(
                    f"the target ended the copy of slots {slots[0]}..: "
                    f"{(await call.code()).name}: {await call.details()}"
                ) from None
            ctx.counters["source_batches"] += 1
            outstanding.append((message.seq, counts))
            while len(outstanding) >= COPY_WINDOW:
                await read_ack()

        try:
            for i in range(0, len(items), batch):
                chunk = items[i : i + batch]
                paid = min(covered, len(chunk))
                covered -= paid
                if len(chunk) > paid:
                    await m.limiter.take(len(chunk) - paid)
                while chunk:
                    # One script call reads as many keys as fill a message (BIG: not read).
                    n, replies = await ctx.keys.copy_replies([k for _, k in chunk])
                    if n < 1:
                        raise StepFailed(f"the copy script answered no key of slots {slots[0]}..")
                    taken, chunk = chunk[:n], chunk[n:]
                    big = []
                    if BIG in replies[1::2]:
                        big = [item for j, item in enumerate(taken) if replies[2 * j + 1] == BIG]
                        keep = [j for j in range(n) if replies[2 * j + 1] != BIG]
                        taken = [taken[j] for j in keep]
                        replies = [r for j in keep for r in replies[2 * j : 2 * j + 2]]
                    if taken:
                        await send(*self._message(slots[0] if one_slot else None, taken, replies))
                    for slot, key in big:
                        await self._send_pieces(m, slot, key, one_slot, send)
            await call.done_writing()
            while outstanding:
                await read_ack()
        finally:
            call.cancel()

    async def _batch(
        self, one_slot: int | None, group: list[tuple[int, bytes]]
    ) -> tuple[control_pb2.CopyBatch, list[tuple[int, int]]]:
        """A batch of the DUMPs of ``group`` (one round trip, whatever their size)."""
        replies = await self._ctx.keys.dump_replies([k for _, k in group])
        return self._message(one_slot, group, replies)

    def _message(
        self, one_slot: int | None, group: list[tuple[int, bytes]], replies: list[Any]
    ) -> tuple[control_pb2.CopyBatch, list[tuple[int, int]]]:
        """The batch of ``group`` from its DUMP replies (see ``add_dumps``) and its keys per
        slot: the single-slot form when ``one_slot`` is the slot, else parts per slot."""
        keys = [k for _, k in group]
        message = control_pb2.CopyBatch(source_id=self._ctx.server_id)
        if one_slot is not None:
            message.slot = one_slot
            add_dumps(message.keys, keys, replies)
            return message, [(one_slot, len(group))]
        counts: list[tuple[int, int]] = []
        j = 0
        for slot, members in itertools.groupby(group, key=lambda item: item[0]):
            of_slot = [k for _, k in members]
            add_dumps(message.parts.add(slot=slot).keys, of_slot, replies, j)
            counts.append((slot, len(of_slot)))
            j += len(of_slot)
        return message, counts

    async def _send_pieces(
        self, m: Migration, slot: int, key: bytes, one_slot: bool, send: Any
    ) -> None:
        """A key too big for one DUMP, in pieces on the same stream (see ``SourceKeys.pieces``);
        a type that cannot be rebuilt from pieces is DUMPed after all."""
        ctx = self._ctx
        sent = False
        async for piece in ctx.keys.pieces(slot, key):
            sent = True
            ctx.counters["source_pieces"] += 1
            message = control_pb2.CopyBatch(
                slot=slot if one_slot else 0, source_id=ctx.server_id, chunk=piece
            )
            await send(message, [(slot, 1)] if piece.last else [])
        if not sent:
            log.warning("slot %d: a big key of a type without pieces is DUMPed whole", slot)
            await send(*await self._batch(slot if one_slot else None, [(slot, key)]))

    async def pull(self, req: control_pb2.PullRequest) -> list[control_pb2.KeyDump]:
        """Keys of a frozen slot the target needs before it can apply a write (served to the
        target's control channel)."""
        ctx = self._ctx
        rec = ctx.slots.records.get(req.slot)
        state = ctx.table.state(req.slot)
        if (
            rec is None
            or rec.peer != req.target_id
            or state not in (SlotState.FROZEN, SlotState.MOVED)
        ):
            raise MigrationRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"slot {req.slot} is not frozen here for server {req.target_id} ({state.name})",
            )
        barrier = ctx.slots.barriers.get(req.slot)
        if barrier is not None and not await barrier:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, "the freeze is not complete")
        for k in req.keys:
            if is_reserved(k):
                raise MigrationRequestError(grpc.StatusCode.INVALID_ARGUMENT, "reserved key")
        try:
            sizes = await ctx.keys.sizes(list(req.keys))
        except (StepFailed, OSError) as e:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        if any(n > ctx.keys.limits.chunk_bytes for n in sizes):
            # One DUMP of it would stall this Redis (and may not fit a message): the target
            # answers the write BUSY, and its retry lands once the copy brought the key.
            ctx.counters["source_pulls_refused_big"] += 1
            raise MigrationRequestError(
                grpc.StatusCode.UNAVAILABLE, "the key is too big to pull; it comes with the copy"
            )
        ctx.counters["source_pulls_served"] += 1
        try:
            return await ctx.keys.dump(req.keys)
        except (StepFailed, OSError) as e:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
