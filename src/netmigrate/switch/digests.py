"""Digest buffering, de-duplication and acknowledgement (P4Runtime spec, "DigestEntry").

The data plane queues digest messages here; nothing is generated for a digest until a
controller enables it with a DigestEntry INSERT. A buffer is sent as one ``DigestList`` when
it holds ``max_list_size`` distinct messages or when its oldest message has waited
``max_timeout_ns``. Messages sent but not yet acknowledged (for at most ``ack_timeout_ns``)
are not generated again. The engine knows no protobuf and no event loop: the runtime gives it
a ``schedule(delay_s, callback)`` and a ``sink(digest_id, list_id, messages)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Message = tuple[int, ...]
Sink = Callable[[int, int, list[Message]], bool]
Schedule = Callable[[float, Callable[[], None]], object]


@dataclass(slots=True)
class DigestConfig:
    max_timeout_ns: int = 0
    max_list_size: int = 0
    ack_timeout_ns: int = 0


@dataclass(slots=True)
class _DigestState:
    config: DigestConfig
    buffer: list[Message] = field(default_factory=list)
    buffered: set[Message] = field(default_factory=set)
    flush_scheduled: bool = False
    next_list_id: int = 1
    #: list_id -> (messages, monotonic send time) of lists sent and not yet acknowledged.
    unacked: dict[int, tuple[list[Message], float]] = field(default_factory=dict)
    cached: set[Message] = field(default_factory=set)


@dataclass(slots=True)
class DigestStats:
    generated: int = 0
    duplicates: int = 0
    lists_sent: int = 0
    lists_dropped: int = 0
    disabled_drops: int = 0


class DigestEngine:
    def __init__(self, schedule: Schedule, sink: Sink) -> None:
        self._schedule = schedule
        self._sink = sink
        self._digests: dict[int, _DigestState] = {}
        self.stats = DigestStats()

    # -- configuration (DigestEntry) --------------------------------------------------------

    def config(self, digest_id: int) -> DigestConfig | None:
        st = self._digests.get(digest_id)
        return None if st is None else st.config

    def configured(self) -> list[tuple[int, DigestConfig]]:
        return [(d, st.config) for d, st in self._digests.items()]

    def enable(self, digest_id: int, config: DigestConfig) -> None:
        self._digests[digest_id] = _DigestState(config)

    def reconfigure(self, digest_id: int, config: DigestConfig) -> None:
        self._digests[digest_id].config = config

    def disable(self, digest_id: int) -> None:
        self._digests.pop(digest_id, None)

    # -- data plane ------------------------------------------------------------------------

    def push(self, digest_id: int, message: Message) -> None:
        st = self._digests.get(digest_id)
        if st is None:
            self.stats.disabled_drops += 1
            return
        self._expire(st)
        if message in st.buffered or message in st.cached:
            self.stats.duplicates += 1
            return
        self.stats.generated += 1
        st.buffer.append(message)
        st.buffered.add(message)
        cfg = st.config
        if cfg.max_list_size > 0 and len(st.buffer) >= cfg.max_list_size:
            self._flush(digest_id)
        elif not st.flush_scheduled:
            st.flush_scheduled = True
            self._schedule(cfg.max_timeout_ns / 1e9, lambda: self._flush(digest_id))

    # -- stream ----------------------------------------------------------------------------

    def ack(self, digest_id: int, list_id: int) -> bool:
        """Forget an acknowledged list; False when the digest id is not enabled."""
        st = self._digests.get(digest_id)
        if st is None:
            return False
        sent = st.unacked.pop(list_id, None)
        if sent is not None:
            st.cached.difference_update(sent[0])
        return True

    def reset_cache(self) -> None:
        """Drop every unacknowledged list (the spec allows it on a primary change)."""
        for st in self._digests.values():
            st.unacked.clear()
            st.cached.clear()

    def _flush(self, digest_id: int) -> None:
        st = self._digests.get(digest_id)
        if st is None or not st.buffer:
            if st is not None:
                st.flush_scheduled = False
            return
        messages, st.buffer = st.buffer, []
        st.buffered = set()
        st.flush_scheduled = False
        list_id = st.next_list_id
        st.next_list_id += 1
        if not self._sink(digest_id, list_id, messages):
            self.stats.lists_dropped += 1
            return
        self.stats.lists_sent += 1
        if st.config.ack_timeout_ns > 0:
            st.unacked[list_id] = (messages, time.monotonic())
            st.cached.update(messages)

    def _expire(self, st: _DigestState) -> None:
        if not st.unacked:
            return
        limit = time.monotonic() - st.config.ack_timeout_ns / 1e9
        expired = [lid for lid, (_, sent) in st.unacked.items() if sent <= limit]
        for lid in expired:
            msgs, _ = st.unacked.pop(lid)
            st.cached.difference_update(msgs)
