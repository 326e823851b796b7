"""The request-id records of the source's Redis (D16) that the handover hands over, read once
per record instead of once per wave.

Every wave needs the recorded writes of its own slots, but the records of all slots share
the reserved slot. Reading and decoding every live record for every wave made the handover
cost O(records x waves) at the source, the host whose CPU bounds a migration (workload A
records half of its operations). A record's value never changes while it lives (every writer
sets one only where none exists: the write scripts GET it first, ``record_replies`` uses NX),
so a record read once is known until its TTL ends. Per wave only the record keys are listed
(records of the wave's slots may have been written up to its freeze); only keys not read
before, or whose TTL as read has run out, are read and decoded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netmigrate.agent.dedup import record_slot
from netmigrate.agent.recorded import RecordedWrite, recorded_write
from netmigrate.agent.reserved import REQUEST_ID_PREFIX, RESERVED_SLOT
from netmigrate.agent.resp import command, command_of
from netmigrate.agent.source.keys import SourceKeys

#: Record keys asked for beyond the reserved slot's count: records of other slots are added
#: between the count and the listing, and a listing cut at the count could leave out one of
#: the wave's (Redis lists a slot's newest keys first).
_LIST_MARGIN = 1024
#: Records read per round trip.
_READ_CHUNK = 2000
#: Known records are forgotten in groups by the time they may expire, rounded down to this
#: many seconds (so a wave touches a few groups, not every known record).
_EXPIRY_STEP = 0.25
#: PTTL key, formatted with (len, key).
_PTTL = b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"


@dataclass(frozen=True, slots=True)
class _Known:
    #: Monotonic time until which the record is certainly the one read: its PTTL counted
    #: from before the read was sent, never later than its real expiry.
    valid_until: float
    #: The slot of the request it records (None: not a readable record).
    slot: int | None


class RecordCache:
    def __init__(self, keys: SourceKeys, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        #: record key -> what is known of it.
        self._known: dict[bytes, _Known] = {}
        #: slot -> {record key: record} of the known records, decoded only when their slot's
        #: wave needs them (the window answers most of them already: see ``IdHandover``).
        self._by_slot: dict[int, dict[bytes, bytes]] = {}
        #: expiry group -> the known keys in it: group g holds the records known until a time
        #: in [g, g + 1) x _EXPIRY_STEP; math.inf: records without a TTL.
        self._expiry: dict[float, list[bytes]] = {}
        #: One call at a time: each one's listing, reads and forgetting are one consistent step.
        self._lock = asyncio.Lock()
        #: Records read from Redis (rather than known from an earlier wave).
        self.reads = 0

    async def writes_of(self, slots: Iterable[int]) -> dict[int, list[RecordedWrite]]:
        """Every write of ``slots`` whose record is live in Redis now (call it after the
        slots' freeze: no record of them is added after it)."""
        async with self._lock:
            listed = await self._list()
            self._forget(listed)
            # Set operations in C: a wave's listing holds every live record.
            unread = [k for k in listed - self._known.keys() if k.startswith(REQUEST_ID_PREFIX)]
            for i in range(0, len(unread), _READ_CHUNK):
                await self._read(unread[i : i + _READ_CHUNK])
            out: dict[int, list[RecordedWrite]] = {}
            for s in slots:
                writes = [recorded_write(r) for r in self._by_slot.get(s, {}).values()]
                out[s] = [w for w in writes if w is not None and w.slot == s]
            return out

    def _forget(self, listed: set[bytes]) -> None:
        """Forget records that are gone (not ``listed``) or that may have expired since they
        were read (a key listed again may then be a new record)."""
        now = self._clock()
        known = self._known
        for group in [g for g in self._expiry if g * _EXPIRY_STEP <= now]:
            keys = self._expiry.pop(group)
            # Dropped at their own time, not the group's: a record read again in the last
            # moments of its life would be read once per wave until it expires.
            later = [k for k in keys if k in known and known[k].valid_until > now]
            for key in keys:
                if key in known and known[key].valid_until <= now:
                    self._drop(key)
            if later:
                self._expiry[group] = later
        for key in known.keys() - listed:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        k = self._known.pop(key, None)
        if k is None:
            return  # gone already (its expiry group still names it)
        if k.slot is not None:
            of_slot = self._by_slot.get(k.slot)
            if of_slot is not None:
                of_slot.pop(key, None)
                if not of_slot:
                    del self._by_slot[k.slot]

    async def _read(self, keys: list[bytes]) -> None:
        sent = self._clock()
        replies = await self._keys.calls(
            [command_of([b"MGET", *keys]), *[_PTTL % (len(k), k) for k in keys]]
        )
        for key, value, ttl in zip(keys, replies[0], replies[1:], strict=True):
            if value is None or ttl == -2:
                continue  # expired since the listing: no longer a write to hand over
            until = math.inf if ttl < 0 else sent + ttl / 1000
            group = math.inf if ttl < 0 else math.floor(until / _EXPIRY_STEP)
            self.reads += 1
            slot = record_slot(value)
            self._known[key] = _Known(until, slot)
            self._expiry.setdefault(group, []).append(key)
            if slot is not None:
                self._by_slot.setdefault(slot, {})[key] = value

    async def _list(self) -> set[bytes]:
        """The keys of the reserved slot now: every record key, and a few other reserved
        keys (the caller never reads those)."""
        (count,) = await self._keys.calls([command(b"CLUSTER", b"COUNTKEYSINSLOT", RESERVED_SLOT)])
        want = int(count) + _LIST_MARGIN
        while True:
            (keys,) = await self._keys.calls(
                [command(b"CLUSTER", b"GETKEYSINSLOT", RESERVED_SLOT, want)]
            )
            if len(keys) < want:
                return set(keys)
            want *= 2
