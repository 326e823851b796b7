"""SLOT_START and SLOT_COMPLETE: sent through the switch (resent until the target
acknowledges), and the acknowledgements, handled by the data path in arrival order with the
client requests. The acknowledgement of a START is the slot's freeze point."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Any

from netmigrate.agent.config import parse_host_port
from netmigrate.agent.interfaces import DatagramOut
from netmigrate.agent.migration_store import MigrationRecord
from netmigrate.agent.slots import SlotState
from netmigrate.agent.source.context import SourceContext
from netmigrate.agent.source.model import StepFailed
from netmigrate.protocol.codec import Control, ErrorReply, Header, HeaderFields, encode
from netmigrate.protocol.constants import (
    F_KEYSPACE,
    F_OP,
    F_SLOT,
    F_SOURCE_ID,
    F_STATUS,
    F_TARGET_ID,
    REPLY_BIT,
    Op,
    Status,
)

#: SLOT_START / SLOT_COMPLETE: first resend after this long, doubling up to the maximum.
TRANSITION_TIMEOUT = 0.2
TRANSITION_MAX_TIMEOUT = 1.0
TRANSITION_ATTEMPTS = 10
_PING = b"*1\r\n$4\r\nPING\r\n"


class Transitions:
    def __init__(self, ctx: SourceContext, datapath: DatagramOut) -> None:
        self._ctx = ctx
        self._dp = datapath
        #: (op, slot) -> future of the target's acknowledgement: (status, message).
        self._acks: dict[tuple[int, int], asyncio.Future[tuple[int, str]]] = {}
        self._client_id = secrets.randbits(32)
        self._counter = itertools.count(1)

    def on_reply(
        self, fields: HeaderFields, body: Any, commands: list[bytes], callbacks: list[Any]
    ) -> None:
        """The target's answer to SLOT_START / SLOT_COMPLETE, in arrival order."""
        ctx = self._ctx
        op = fields[F_OP] & ~REPLY_BIT
        slot = fields[F_SLOT]
        rec = ctx.slots.records.get(slot)
        if (
            rec is None
            or rec.peer != fields[F_TARGET_ID]
            or fields[F_SOURCE_ID] != ctx.server_id
            or fields[F_KEYSPACE] != ctx.keyspace
        ):
            ctx.counters["source_stray_acks"] += 1
            return
        status = fields[F_STATUS]
        if status == Status.OK and (not isinstance(body, Control) or body.epoch != rec.epoch):
            # An acknowledgement of an earlier migration of the slot (delayed or replayed):
            # taking it would freeze or hand over the slot on someone else's word.
            ctx.counters["source_stale_acks"] += 1
            return
        ctx.counters["source_acks"] += 1
        message = body.message if isinstance(body, ErrorReply) else ""
        if op == Op.SLOT_START and status == Status.OK:
            table = ctx.slots.table
            state = table.state(slot)
            barrier = ctx.slots.barriers.get(slot)
            if state == SlotState.MIGRATING_OUT or (
                state == SlotState.FROZEN
                and barrier is not None
                and barrier.done()
                and not barrier.result()
            ):
                # The freeze point: everything the switch sent here before it flipped the slot
                # arrived before this acknowledgement and is queued to Redis already. From now
                # on only double reads are served; the PING returns once all of it is applied.
                table.set_state([slot], SlotState.FROZEN)
                barrier = asyncio.get_running_loop().create_future()
                ctx.slots.barriers[slot] = barrier
                commands.append(_PING)
                callbacks.append((_on_barrier, barrier))
        waiter = self._acks.get((op, slot))
        if waiter is not None and not waiter.done():
            waiter.set_result((status, message))

    async def send_one(self, mrec: MigrationRecord, slot: int, op: Op) -> None:
        """Send SLOT_START / SLOT_COMPLETE through the switch until the target acknowledges."""
        failed = await self.send(mrec, [slot], op)
        if failed:
            raise StepFailed(failed[slot])

    async def send(self, mrec: MigrationRecord, slots: list[int], op: Op) -> dict[int, str]:
        """SLOT_START / SLOT_COMPLETE of every slot, back to back, resent (those not
        acknowledged yet) until the target acknowledges; the slots that failed, with why."""
        if not slots:
            return {}
        ctx = self._ctx
        host, port = parse_host_port(mrec.service, "service")
        loop = asyncio.get_running_loop()
        datagrams: dict[int, bytes] = {}
        waiters: dict[int, asyncio.Future[tuple[int, str]]] = {}
        for slot in slots:
            request_id = self._client_id << 32 | (next(self._counter) & 0xFFFFFFFF)
            # The slot's record was persisted (with its epoch) before its first START.
            epoch = ctx.slots.records[slot].epoch
            datagrams[slot] = encode(
                Header(
                    op=int(op),
                    request_id=request_id,
                    keyspace=ctx.keyspace,
                    slot=slot,
                    source_id=ctx.server_id,
                    target_id=mrec.target_id,
                ),
                Control(epoch),
            )
            waiters[slot] = self._acks[(int(op), slot)] = loop.create_future()
        failed: dict[int, str] = {}
        waiting = list(slots)
        timeout = TRANSITION_TIMEOUT
        try:
            for _ in range(TRANSITION_ATTEMPTS):
                for slot in waiting:
                    ctx.counters["source_transitions_sent"] += 1
                    self._dp.send_to(datagrams[slot], (host, port))
                await asyncio.wait([waiters[s] for s in waiting], timeout=timeout)
                still = []
                for slot in waiting:
                    waiter = waiters[slot]
                    if not waiter.done():
                        still.append(slot)
                        continue
                    status, message = waiter.result()
                    if status != Status.OK:
                        failed[slot] = (
                            f"server {mrec.target_id} refused {op.name}: "
                            f"{Status(status).name}: {message}"
                        )
                waiting = still
                if not waiting:
                    break
                timeout = min(timeout * 2, TRANSITION_MAX_TIMEOUT)
        finally:
            for slot, waiter in waiters.items():
                if self._acks.get((int(op), slot)) is waiter:
                    del self._acks[(int(op), slot)]
        for slot in waiting:
            failed[slot] = (
                f"no acknowledgement of {op.name} for slot {slot} from server {mrec.target_id} "
                f"via {mrec.service} after {TRANSITION_ATTEMPTS} attempts"
            )
        return failed


def _on_barrier(reply: Any, barrier: asyncio.Future[bool]) -> None:
    if not barrier.done():
        barrier.set_result(not isinstance(reply, ConnectionError))
