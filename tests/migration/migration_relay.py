"""A small UDP model of the switch's steering (docs/pipeline.md), for agent-level tests.

It is what the switch does for one keyspace, over loopback UDP: a per-slot map of owner and
target, SLOT_START / SLOT_COMPLETE accepted only from the slot's owner (its data address), writes
of a migrating slot redirected to the target with TO_TARGET, reads double-read (a clone to the
target first, then the owner's copy), the client's DOUBLE_READ / TO_TARGET flags cleared.
Everything is forwarded in arrival order from one thread, so per-destination order holds, as
the switch keeps it per egress port.

Not being IP-transparent, it forwards each sender's requests through a socket of its own and
sends the answers that come back on that socket to the sender.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from netmigrate.protocol.codec import ProtocolError, decode_header
from netmigrate.protocol.constants import READ_OPS, REPLY_BIT, WRITE_OPS, Flag, Op

Address = tuple[str, int]
_FLAGS = 2  # offset of the flags byte in the header
_SWITCH_FLAGS = int(Flag.DOUBLE_READ | Flag.TO_TARGET)


class Relay:
    def __init__(self, servers: dict[int, Address], default_owner: int) -> None:
        self.servers = dict(servers)
        self.default_owner = default_owner
        #: slot -> (owner, target); absent = (default owner, none).
        self.slots: dict[int, tuple[int, int]] = {}
        self.transitions: list[tuple[str, int, int, int]] = []
        self.rejected = 0
        #: Drop every datagram of these ops (to model loss of a transition).
        self.drop_ops: set[int] = set()
        self._loop = asyncio.get_running_loop()
        self._front = self._socket()
        self._upstream: dict[Address, socket.socket] = {}
        self._loop.add_reader(self._front.fileno(), self._on_front)

    @property
    def address(self) -> Address:
        return self._front.getsockname()[:2]

    def _socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    def close(self) -> None:
        for s in (self._front, *self._upstream.values()):
            self._loop.remove_reader(s.fileno())
            s.close()

    def entry(self, slot: int) -> tuple[int, int]:
        return self.slots.get(slot, (self.default_owner, 0))

    def _via(self, sender: Address) -> socket.socket:
        up = self._upstream.get(sender)
        if up is None:
            up = self._upstream[sender] = self._socket()
            self._loop.add_reader(up.fileno(), self._on_upstream, up, sender)
        return up

    def _on_upstream(self, up: socket.socket, sender: Address) -> None:
        while True:
            try:
                data, _ = up.recvfrom(65536)
            except BlockingIOError:
                return
            self._front.sendto(data, sender)  # replies are plain forwarding

    def _on_front(self) -> None:
        while True:
            try:
                data, sender = self._front.recvfrom(65536)
            except BlockingIOError:
                return
            try:
                h = decode_header(data)
            except ProtocolError:
                continue
            if h.op & REPLY_BIT or h.op in self.drop_ops:
                continue
            self._steer(data, h, sender)

    def _steer(self, data: bytes, h, sender: Address) -> None:  # type: ignore[no-untyped-def]
        owner, target = self.entry(h.slot)
        op = h.op
        if op in (Op.SLOT_START, Op.SLOT_COMPLETE):
            if self.servers.get(h.source_id) != sender or h.target_id not in self.servers:
                self.rejected += 1
                return
            if op == Op.SLOT_START:
                ok = h.source_id == owner and h.target_id != owner and target in (0, h.target_id)
                if ok and target == 0:
                    self.slots[h.slot] = (owner, h.target_id)
                    self.transitions.append(("start", h.slot, owner, h.target_id))
            else:
                ok = (h.source_id == owner and target == h.target_id != 0) or (
                    owner == h.target_id and target == 0
                )
                if ok and target != 0:
                    self.slots[h.slot] = (h.target_id, 0)
                    self.transitions.append(("complete", h.slot, owner, h.target_id))
            if not ok:
                self.rejected += 1
                return
            self._send(data, sender, h.target_id)
            return
        if op not in READ_OPS and op not in WRITE_OPS:
            return
        flags = data[_FLAGS] & ~_SWITCH_FLAGS
        if target == 0:
            self._send(_with_flags(data, flags), sender, owner)
        elif op in WRITE_OPS:
            self._send(_with_flags(data, flags | Flag.TO_TARGET), sender, target)
        else:
            clone = flags | Flag.DOUBLE_READ | Flag.TO_TARGET
            self._send(_with_flags(data, clone), sender, target)
            self._send(_with_flags(data, flags | Flag.DOUBLE_READ), sender, owner)

    def _send(self, data: bytes, sender: Address, server: int) -> None:
        self._via(sender).sendto(data, self.servers[server])


def _with_flags(data: bytes, flags: int) -> bytes:
    return data[:_FLAGS] + bytes([flags]) + data[_FLAGS + 1 :]


@contextmanager
def relay(servers: dict[int, Address], default_owner: int) -> Iterator[Relay]:
    r = Relay(servers, default_owner)
    try:
        yield r
    finally:
        r.close()
