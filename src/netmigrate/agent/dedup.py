"""At-most-once execution: recent request ids and their replies, in bounded memory.

A request id is client id (high 32 bits) | counter (low 32 bits). The window remembers, per
request id, either "in flight" (with the addresses to answer) or the reply bytes, so that a
retry (RETRY flag or not) is answered from the cache instead of being applied again, also when
it arrives before the original finished.

Bounds: at most ``max_entries`` remembered ids and ``max_bytes`` of cached replies in total,
at most ``max_per_client`` ids per client. Beyond that the least recently active client loses
its oldest ids first, so one busy client cannot push out everybody else's recent history. The
window must cover a client's retry horizon (timeout x attempts) at its request rate.

A migration source hands the target the entries of a slot (:meth:`DedupWindow.entries_of`).
Finding them by scanning the whole window per slot would cost O(window) per slot, so the
slots of a running migration are *watched*: an index slot -> request ids is kept for them
only (one dict lookup per request otherwise).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

Address = Any  # what socket.recvfrom returns


class DedupEntry:
    __slots__ = ("addr", "copies", "reply", "request_id", "slot")

    def __init__(self, request_id: int, slot: int, addr: Address) -> None:
        self.request_id = request_id
        self.slot = slot
        #: None while the request is in flight.
        self.reply: bytes | None = None
        #: Where the original came from, and where copies that arrived while it was in flight
        #: came from (None when there were none: the common case allocates no list).
        self.addr = addr
        self.copies: list[Address] | None = None

    @property
    def waiters(self) -> list[Address]:
        """Every address to answer when the request completes, the original sender first."""
        return [self.addr] if self.copies is None else [self.addr, *self.copies]


class DedupWindow:
    def __init__(self, max_entries: int, max_per_client: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self.max_bytes = max_bytes
        self._entries: dict[int, DedupEntry] = {}
        #: client id -> its entries, oldest first; the dict itself is in LRU order of clients.
        self._clients: OrderedDict[int, deque[DedupEntry]] = OrderedDict()
        self._queued = 0
        #: Watched slots -> request ids remembered for them (empty dict: nothing watched).
        self._watched: dict[int, set[int]] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: int) -> DedupEntry | None:
        return self._entries.get(request_id)

    def begin(self, request_id: int, slot: int, addr: Address) -> DedupEntry:
        """Remember ``request_id`` as in flight."""
        entry = DedupEntry(request_id, slot, addr)
        self._entries[request_id] = entry
        if self._watched:
            ids = self._watched.get(slot)
            if ids is not None:
                ids.add(request_id)
        client = request_id >> 32
        queue = self._clients.get(client)
        if queue is None:
            queue = self._clients[client] = deque()
        else:
            self._clients.move_to_end(client)
        queue.append(entry)
        self._queued += 1
        if len(queue) > self.max_per_client:
            self._drop(queue.popleft())
        if self._queued > self.max_entries:
            self._evict()
        return entry

    def complete(self, entry: DedupEntry, reply: bytes) -> None:
        """The request was applied and answered ``reply``: keep it for retries."""
        entry.reply = reply
        if self._entries.get(entry.request_id) is entry:
            self.bytes += len(reply)
            if self.bytes > self.max_bytes:
                self._evict()

    def forget(self, entry: DedupEntry) -> None:
        """The request was not applied (e.g. refused): a retry must run again."""
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]
            self._unindex(entry)
            if entry.reply is not None:
                self.bytes -= len(entry.reply)

    def install(self, request_id: int, slot: int, reply: bytes) -> bool:
        """Remember a request another agent applied (its reply given); False if known here."""
        if request_id in self._entries:
            return False
        self.complete(self.begin(request_id, slot, None), reply)
        return True

    def watch(self, slots: list[int] | range | set[int]) -> None:
        """Start indexing ``slots`` (one scan of the window for all of them)."""
        new = {s: set() for s in slots if s not in self._watched}
        if not new:
            return
        for rid, entry in self._entries.items():
            ids = new.get(entry.slot)
            if ids is not None:
                ids.add(rid)
        self._watched.update(new)

    def unwatch(self, slots: list[int] | range | set[int]) -> None:
        for s in slots:
            self._watched.pop(s, None)

    def entries_of(self, slot: int) -> list[DedupEntry]:
        """Remembered entries of a watched ``slot``."""
        ids = self._watched.get(slot)
        if ids is None:
            raise KeyError(f"slot {slot} is not watched")
        return [self._entries[rid] for rid in ids if rid in self._entries]

    def _unindex(self, entry: DedupEntry) -> None:
        if self._watched:
            ids = self._watched.get(entry.slot)
            if ids is not None:
                ids.discard(entry.request_id)

    def request_ids(self, slot: int) -> Iterator[int]:
        """Remembered request ids of ``slot`` (what a migration source hands its target)."""
        return (rid for rid, e in self._entries.items() if e.slot == slot)

    def _drop(self, entry: DedupEntry) -> None:
        self._queued -= 1
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]
            self._unindex(entry)
            self.evictions += 1
            if entry.reply is not None:
                self.bytes -= len(entry.reply)

    def _evict(self) -> None:
        while self._clients and (self._queued > self.max_entries or self.bytes > self.max_bytes):
            client, queue = next(iter(self._clients.items()))
            self._drop(queue.popleft())
            if not queue:
                del self._clients[client]
