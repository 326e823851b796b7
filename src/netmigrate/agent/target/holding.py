"""The hold queue: a slot's client requests (other than double-read GETs) wait until the
source's recent request ids arrived, so a write the source applied and a client retried here
is answered from those ids, not applied twice. Bounded: BUSY when full or held too long."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from netmigrate.agent.target.context import TargetContext
from netmigrate.agent.target.model import Held, Incoming
from netmigrate.protocol.codec import HeaderFields
from netmigrate.protocol.constants import Status

_SWEEP_INTERVAL = 0.05


class HoldQueue:
    def __init__(self, ctx: TargetContext, limit: int, timeout: float) -> None:
        self._ctx = ctx
        self.limit = limit
        self.timeout = timeout
        self._held = 0

    def hold(self, inc: Incoming, fields: HeaderFields, data: bytes, addr: Any) -> None:
        ctx = self._ctx
        if self._held >= self.limit:
            ctx.counters["target_hold_busy"] += 1
            message = f"slot {inc.slot} is waiting for the source's request ids (queue full)"
            ctx.dp.refuse(fields, addr, int(Status.BUSY), message)
            return
        ctx.counters["target_held"] += 1
        self._held += 1
        inc.held.append(Held(time.monotonic(), fields, data, addr))

    def release(self, inc: Incoming, busy: str | None = None) -> None:
        """Let the held requests run (in order), or answer them BUSY."""
        held, inc.held = inc.held, deque()
        self._held -= len(held)
        if busy is not None:
            for h in held:
                self._ctx.dp.refuse(h.fields, h.addr, int(Status.BUSY), busy)
            return
        if held:
            self._ctx.dp.replay((h.data, h.addr) for h in held)

    async def sweep(self) -> None:
        """Answer BUSY to requests held longer than ``timeout`` (runs until cancelled)."""
        ctx = self._ctx
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            limit = time.monotonic() - self.timeout
            for inc in list(ctx.slots.values()):
                while inc.held and inc.held[0].since < limit:
                    h = inc.held.popleft()
                    self._held -= 1
                    ctx.counters["target_hold_busy"] += 1
                    message = f"slot {inc.slot} is waiting for the source's request ids"
                    ctx.dp.refuse(h.fields, h.addr, int(Status.BUSY), message)
