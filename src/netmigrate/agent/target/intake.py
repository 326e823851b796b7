"""What the source sends a slot that migrates in, over the control channel: its recent
request ids (recorded in Redis too, then the slot's held requests run), and the copied keys,
restored unless a client wrote them here first (writes win over copies)."""

from __future__ import annotations

from netmigrate._generated.agent.v1 import control_pb2
from netmigrate.agent.dedup import record_replies
from netmigrate.agent.restore import Dump, eval_command, finish_command, piece_commands
from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.holding import HoldQueue
from netmigrate.agent.target.model import Incoming, NotMigratingIn, TargetDataLost


class Intake:
    def __init__(self, ctx: TargetContext, holds: HoldQueue) -> None:
        self._ctx = ctx
        self._holds = holds

    def _incoming_from(self, slot: int, source: int) -> Incoming:
        lost = self._ctx.lost.get(slot)
        if lost is not None and lost.source_id == source:
            raise TargetDataLost(f"slot {slot}: {lost.why}")
        inc = self._ctx.slots.get(slot)
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
            self._ctx.admin,
            [(e.request_id, e.reply, e.fingerprint or None) for _, es in items for e in es],
        )
        for inc in incs:  # checked after the last wait: nothing changes until the end
            if not self._ctx.still_in(inc):
                raise NotMigratingIn(f"slot {inc.slot} no longer migrates in")
        dedup = self._ctx.dp.dedup
        installed = 0
        for (slot, entries), inc in zip(items, incs, strict=True):
            installed += sum(
                dedup.install(e.request_id, slot, e.reply, e.fingerprint or None) for e in entries
            )
            if request.source_control:
                inc.source_control = request.source_control
            if not inc.ids_received:
                inc.ids_received = True
                self._holds.release(inc)
        self._ctx.counters["target_ids_installed"] += installed
        return installed, [slot for slot, _ in items] if request.slots else []

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
        replies = await self._ctx.redis(commands)
        restored = skipped = 0
        gone: list[int] = []
        for (inc, present), reply in zip(applied, replies, strict=True):
            n, dirty = int(reply[0]), int(reply[1])
            if n < 0:
                gone.append(inc.slot)
                continue
            if self._ctx.still_in(inc):
                inc.authoritative.update(d.key for d in present)
            restored += n
            skipped += dirty
        self._ctx.counters["target_keys_restored"] += restored
        self._ctx.counters["target_keys_skipped_dirty"] += skipped
        if gone:
            raise NotMigratingIn(f"slots {gone} have no migration marker here")
        return restored, skipped

    async def restore_piece(self, source: int, piece: control_pb2.KeyChunk) -> tuple[int, int]:
        """Add one piece of a big key to its temporary key, on the data connection (each piece
        is a short command, so client requests interleave); the last piece renames it into
        place unless a client wrote the key meanwhile. Until then the key is not authoritative
        here (a double read takes the source's answer). (restored, skipped as dirty)."""
        inc = self._incoming_from(piece.slot, source)
        commands = piece_commands(piece.slot, piece.key, piece.type, piece.part, piece.items)
        if piece.last:
            commands.append(finish_command(piece.slot, piece.key, piece.present, piece.pttl))
        if not commands:
            return 0, 0
        replies = await self._ctx.redis(commands)
        self._ctx.counters["target_pieces"] += 1
        if not piece.last:
            return 0, 0
        restored, dirty = int(replies[-1][0]), int(replies[-1][1])
        if restored < 0:
            raise NotMigratingIn(f"slot {piece.slot} has no migration marker here")
        if piece.present and self._ctx.still_in(inc):
            inc.authoritative.add(piece.key)
        self._ctx.counters["target_keys_restored"] += restored
        self._ctx.counters["target_keys_skipped_dirty"] += dirty
        return restored, dirty
