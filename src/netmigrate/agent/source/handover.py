"""The request-id handover: after the freeze, the source sends the target the ids (and
answers) of the writes it applied for the slots, so that a write a client retries at the
target is answered from them instead of being applied twice. The target holds the slots'
client requests until they arrive."""

from __future__ import annotations

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.migration_store import MigrationRecord
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import RPC_TIMEOUT, StepFailed
from netmigrate.protocol.constants import REPLY_BIT, WRITE_OPS

_WRITE_OPS = frozenset(int(op) for op in WRITE_OPS)


class IdHandover:
    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx

    def _entries(self, slot: int) -> list[control_pb2.RequestIdEntry]:
        return [
            control_pb2.RequestIdEntry(
                request_id=e.request_id, reply=e.reply, fingerprint=e.fingerprint or b""
            )
            for e in self._ctx.dedup.entries_of(slot)
            if e.reply is not None and (e.reply[1] & ~REPLY_BIT) in _WRITE_OPS
        ]

    async def send_one(self, mrec: MigrationRecord, slot: int) -> None:
        ctx = self._ctx
        await ctx.peers.stub(mrec.target_control).TransferRequestIds(
            control_pb2.TransferRequestIdsRequest(
                slot=slot,
                source_id=ctx.server_id,
                entries=self._entries(slot),
                source_control=mrec.source_control or ctx.control_address,
            ),
            timeout=RPC_TIMEOUT,
        )

    async def send(self, mrec: MigrationRecord, slots: list[int]) -> None:
        """The request ids of every slot of a wave, in one call."""
        if not slots:
            return
        ctx = self._ctx
        per_slot = [control_pb2.SlotRequestIds(slot=s, entries=self._entries(s)) for s in slots]
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
