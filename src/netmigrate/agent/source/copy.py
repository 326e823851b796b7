"""The copy of frozen slots to the target (DUMP + PTTL, batches pipelined over one gRPC
stream, each acknowledged), and the priority pulls of single keys the target asks for."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

import grpc

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.reserved import is_reserved
from netmigrate.agent.slots import SlotState
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import RPC_TIMEOUT, Migration, MigrationRequestError, StepFailed

#: Copy batches in flight per stream (the stream's pipelining).
COPY_WINDOW = 4


class Copier:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx

    async def copy(
        self, m: Migration, slots: list[int], prepaid: int | None = None, one_slot: bool = False
    ) -> None:
        """The copy of a wave: one stream, batches of ``batch_keys`` keys that may span
        slots (``CopyBatch.parts``), up to COPY_WINDOW batches unacknowledged. ``prepaid``
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
                raise StepFailed(f"the target closed the copy stream of slots {slots[0]}..")
            seq, counts = outstanding.popleft()
            if ack.seq != seq or (one_slot and ack.slot != slots[0]):
                raise StepFailed(
                    f"copy of slots {slots[0]}..: acknowledgement {ack.seq}, expected {seq}"
                )
            for slot, n in counts:
                m.slots[slot].keys_copied += n
                m.keys_copied += n
                ctx.counters["source_keys_copied"] += n

        try:
            for seq, i in enumerate(range(0, len(items), batch), start=1):
                chunk = items[i : i + batch]
                paid = min(covered, len(chunk))
                covered -= paid
                if len(chunk) > paid:
                    await m.limiter.take(len(chunk) - paid)
                dumps = await ctx.keys.dump(k for _, k in chunk)
                counts: list[tuple[int, int]] = []
                if one_slot:
                    counts.append((slots[0], len(chunk)))
                    message = control_pb2.CopyBatch(
                        slot=slots[0], source_id=ctx.server_id, seq=seq, keys=dumps
                    )
                else:
                    parts: list[control_pb2.CopyPart] = []
                    j = 0
                    for slot, group in itertools.groupby(chunk, key=lambda item: item[0]):
                        n = sum(1 for _ in group)
                        parts.append(control_pb2.CopyPart(slot=slot, keys=dumps[j : j + n]))
                        counts.append((slot, n))
                        j += n
                    message = control_pb2.CopyBatch(source_id=ctx.server_id, seq=seq, parts=parts)
                await call.write(message)
                ctx.counters["source_batches"] += 1
                outstanding.append((seq, counts))
                while len(outstanding) >= COPY_WINDOW:
                    await read_ack()
            await call.done_writing()
            while outstanding:
                await read_ack()
        finally:
            call.cancel()

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
        ctx.counters["source_pulls_served"] += 1
        try:
            return await ctx.keys.dump(req.keys)
        except (StepFailed, OSError) as e:
            raise MigrationRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
