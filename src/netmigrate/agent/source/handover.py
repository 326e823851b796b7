"""The request-id handover: after the freeze, the source sends the target the ids (and
answers) of the writes it applied for the slots, so that a write a client retries at the
target is answered from them instead of being applied twice. The target holds the slots'
client requests until they arrive.

The ids come from what Redis recorded for the slots (D16 records carry the request header, so
their slot is known), not only from the in-memory window: a write the window forgot (evicted,
or answered BUSY after a dropped Redis connection although Redis applied it) is still a write
the source may have applied, and its retry at the target must not apply it again (#12, item 3). The
freeze barrier (``OutgoingSlots.frozen``) comes first, so every write sent to Redis before the
freeze is applied, and recorded, by the time the records are read. Each record is read and
decoded once, not once per wave (``RecordCache``)."""

from __future__ import annotations

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.migration_store import MigrationRecord
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import RPC_TIMEOUT, StepFailed
from netmigrate.agent.source.records import RecordCache
from netmigrate.protocol.constants import REPLY_BIT, WRITE_OPS

_WRITE_OPS = frozenset(int(op) for op in WRITE_OPS)


class IdHandover:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        self._records = RecordCache(ctx.keys)

    async def _entries(self, slots: list[int]) -> dict[int, list[control_pb2.RequestIdEntry]]:
        """Per slot, every write the source may have applied for it: the window's answered
        writes, and every write Redis still has a record of."""
        ctx = self._ctx
        read = self._records.reads
        recorded = await self._records.writes_of(slots)
        ctx.counters["source_records_read"] += self._records.reads - read
        out: dict[int, list[control_pb2.RequestIdEntry]] = {}
        from_records = 0
        for slot in slots:
            entries = {
                e.request_id: control_pb2.RequestIdEntry(
                    request_id=e.request_id, reply=e.reply, fingerprint=e.fingerprint or b""
                )
                for e in ctx.dedup.entries_of(slot)
                if e.reply is not None and (e.reply[1] & ~REPLY_BIT) in _WRITE_OPS
            }
            for w in recorded[slot]:
                if w.request_id not in entries:
                    from_records += 1
                    entries[w.request_id] = control_pb2.RequestIdEntry(
                        request_id=w.request_id, reply=w.reply, fingerprint=w.fingerprint or b""
                    )
            out[slot] = list(entries.values())
        ctx.counters["source_ids_from_records"] += from_records
        return out

    async def send_one(self, mrec: MigrationRecord, slot: int) -> None:
        ctx = self._ctx
        entries = (await self._entries([slot]))[slot]
        await ctx.peers.stub(mrec.target_control).TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                slot=slot,
                source_id=ctx.server_id,
                entries=entries,
                source_control=mrec.source_control or ctx.control_address,
            ),
            timeout=RPC_TIMEOUT,
        )

    async def send(self, mrec: MigrationRecord, slots: list[int]) -> None:
        """The request ids of every slot of a wave, in one call."""
        if not slots:
            return
        ctx = self._ctx
        entries = await self._entries(slots)
        per_slot = [control_pb2.SlotRequestIds(slot=s, entries=entries[s]) for s in slots]
        reply = await ctx.peers.stub(mrec.target_control).TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                # The first slot in the one-slot fields too (see control.proto).
                slot=per_slot[0].slot,
                entries=per_slot[0].entries,
                source_id=ctx.server_id,
                source_control=mrec.source_control or ctx.control_address,
                slots=per_slot,
            ),
            timeout=RPC_TIMEOUT,
        )
        if sorted(reply.slots) != sorted(slots):
            raise StepFailed(
                f"server {mrec.target_id} did not take the request ids of several slots at once "
                "(an older agent?)"
            )
