"""Switch ports: one non-blocking AF_PACKET socket per interface, with memory-mapped rings.

Each socket is bound to its interface for every protocol, puts the interface in promiscuous
mode (a real NIC would otherwise filter other MACs), ignores the frames this very socket or
the kernel sends out of the interface (PACKET_IGNORE_OUTGOING, Linux >= 4.20: without it the
switch would see its own transmissions) and bypasses the qdisc on transmit.

On the packet path a system call costs as much as the pipeline itself, so by default a port
uses PACKET_MMAP rings (TPACKET_V2): the kernel writes received frames into a shared RX ring
(no recv call per frame), and frames to send are written into a TX ring and handed to the
kernel with one send call per burst (:meth:`Port.flush`), in ring order, so the order of
frames on a port is kept. ``rings=False`` (or a kernel that refuses the rings) falls back to
one recv / send call per frame, with the same :class:`Port` interface.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from netmigrate.netns import call_in_netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
#: Socket buffers of the fallback path: deep enough for a burst of ~10k small frames.
RCVBUF = 16 << 20
SNDBUF = 4 << 20
#: Largest frame we receive (MTU 9000 + Ethernet header, with room to spare).
MAX_FRAME = 65535
#: Ring slot: a tpacket2_hdr, the sockaddr_ll and a 9000-byte-MTU frame fit (16-aligned).
RING_FRAME_SIZE = 10240
#: Four slots per ring block (block sizes must be whole pages).
RING_BLOCK_SIZE = 4 * RING_FRAME_SIZE
#: RX slots per port: ~40 ms of frames at 100k frames/s before the kernel drops.
RX_RING_FRAMES = 4096
TX_RING_FRAMES = 1024
#: How long an empty RX slot may hold up a full next one before it is skipped (see _is_hole).
HOLE_AFTER = 0.002
#: tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_sec, tp_nsec (then vlan).
_RX_HDR = struct.Struct("IIIHHII")
_U32 = struct.Struct("I")
_STATUS_LEN = struct.Struct("II")
#: Where frame data starts in a TX slot: TPACKET2_HDRLEN - sizeof(struct sockaddr_ll).
_TX_DATA = 32
_TX_MAX = RING_FRAME_SIZE - _TX_DATA


class PortError(OSError):
    pass


@dataclass(slots=True)
class PortCounters:
    rx: int = 0
    tx: int = 0
    tx_errors: int = 0
    fault_drops: int = 0
    #: Frames the kernel dropped because the receive ring (or queue) was full.
    kernel_drops: int = 0
    #: RX ring slots the kernel left empty (skipped, see Port._is_hole) / filled too late.
    ring_holes: int = 0
    ring_stale: int = 0
    ring_resyncs: int = 0


@dataclass(eq=False)
class Port:
    number: int
    ifname: str
    sock: socket.socket
    ifindex: int
    counters: PortCounters = field(default_factory=PortCounters)
    ring: mmap.mmap | None = None
    _rx_index: int = 0
    _tx_index: int = 0
    _tx_pending: int = 0
    _stalled_at: int = -1
    _stalled_since: float = 0.0
    _last_ts: tuple[int, int] = (0, 0)
    _holes: set[int] = field(default_factory=set)

    @property
    def uses_rings(self) -> bool:
        return self.ring is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, limit: int) -> list[bytes]:
        """Up to ``limit`` received frames (fewer when no more are waiting)."""
        ring = self.ring
        if ring is None:
            return self._receive_calls(limit)
        out: list[bytes] = []
        append = out.append
        unpack = _RX_HDR.unpack_from
        clear = _U32.pack_into
        idx = self._rx_index
        last_ts = self._last_ts
        while len(out) < limit:
            base = idx * RING_FRAME_SIZE
            status, _len, snaplen, mac, _net, sec, nsec = unpack(ring, base)
            if not status & TP_STATUS_USER:
                if not self._is_hole(idx):
                    break
                idx = idx + 1 if idx + 1 < RX_RING_FRAMES else 0
                continue
            ts = (sec, nsec)
            if self._holes and idx in self._holes:
                self._holes.discard(idx)
                if ts < last_ts:  # filled after we skipped it: an old frame, drop it
                    clear(ring, base, TP_STATUS_KERNEL)
                    self.counters.ring_stale += 1
                    idx = idx + 1 if idx + 1 < RX_RING_FRAMES else 0
                    continue
            last_ts = ts
            start = base + mac
            append(ring[start : start + snaplen])
            clear(ring, base, TP_STATUS_KERNEL)
            idx += 1
            if idx == RX_RING_FRAMES:
                idx = 0
        self._rx_index = idx
        self._last_ts = last_ts
        self.counters.rx += len(out)
        return out

    def _is_hole(self, idx: int) -> bool:
        """Is the empty slot ``idx`` one to skip?

        Writers on several CPUs fill the ring concurrently, so a slot can still be empty
        while the next one is full: a copy in flight, done within microseconds. Under
        overload we have also seen a slot stay empty while the kernel went on filling the
        following ones and kept the socket readable (the loop would spin on it). A slot that
        stays empty for :data:`HOLE_AFTER` seconds while the next one is full is skipped;
        should it be filled late after all, :meth:`receive` drops that old frame rather than
        deliver it out of order.
        """
        ring = self.ring
        assert ring is not None
        nxt = idx + 1 if idx + 1 < RX_RING_FRAMES else 0
        if not _U32.unpack_from(ring, nxt * RING_FRAME_SIZE)[0] & TP_STATUS_USER:
            self._stalled_at = -1
            return False
        now = time.monotonic()
        if self._stalled_at != idx:
            self._stalled_at = idx
            self._stalled_since = now
            return False
        if now - self._stalled_since < HOLE_AFTER:
            return False
        self._stalled_at = -1
        self._holes.add(idx)
        self.counters.ring_holes += 1
        return True

    def resync(self) -> bool:
        """Move to the oldest full slot if the ring has frames but none at our index.

        The watchdog's remedy for a ring where the kernel and we disagree on the next slot
        (the kernel stops writing when the slot it wants is still full, and stops waking us
        up): scan the ring, continue from the oldest frame. Returns whether it moved.
        """
        ring = self.ring
        if ring is None:
            return False
        if _U32.unpack_from(ring, self._rx_index * RING_FRAME_SIZE)[0] & TP_STATUS_USER:
            return False
        oldest = None
        for i in range(RX_RING_FRAMES):
            status, _len, _snap, _mac, _net, sec, nsec = _RX_HDR.unpack_from(
                ring, i * RING_FRAME_SIZE
            )
            if status & TP_STATUS_USER and (oldest is None or (sec, nsec) < oldest[0]):
                oldest = ((sec, nsec), i)
        if oldest is None:
            return False
        # Every slot we jump over is treated like a skipped one (see _is_hole).
        i = self._rx_index
        while i != oldest[1]:
            self._holes.add(i)
            i = i + 1 if i + 1 < RX_RING_FRAMES else 0
        self._rx_index = oldest[1]
        self._stalled_at = -1
        self.counters.ring_resyncs += 1
        return True

    def _receive_calls(self, limit: int) -> list[bytes]:
        out: list[bytes] = []
        recv = self.sock.recv
        try:
            while len(out) < limit:
                out.append(recv(MAX_FRAME))
        except BlockingIOError:
            pass
        self.counters.rx += len(out)
        return out

    def transmit(self, frame: bytes) -> None:
        """Queue ``frame`` for sending (rings) or send it now; :meth:`flush` after a burst."""
        ring = self.ring
        if ring is None:
            try:
                self.sock.send(frame)
                self.counters.tx += 1
            except OSError:
                self.counters.tx_errors += 1
            return
        n = len(frame)
        if n > _TX_MAX:
            self.counters.tx_errors += 1
            return
        base = (RX_RING_FRAMES + self._tx_index) * RING_FRAME_SIZE
        if _U32.unpack_from(ring, base)[0] != TP_STATUS_AVAILABLE:
            self.flush()  # the ring is full of frames not yet handed over
            if _U32.unpack_from(ring, base)[0] != TP_STATUS_AVAILABLE:
                self.counters.tx_errors += 1
                return
        ring[base + _TX_DATA : base + _TX_DATA + n] = frame
        # tp_status and tp_len in one write, after the data: the kernel reads TX slots only
        # inside our send call (flush), never concurrently.
        _STATUS_LEN.pack_into(ring, base, TP_STATUS_SEND_REQUEST, n)
        self._tx_index = (self._tx_index + 1) % TX_RING_FRAMES
        self._tx_pending += 1

    def flush(self) -> None:
        """Hand every queued frame to the kernel (one system call), in queue order."""
        pending = self._tx_pending
        if not pending:
            return
        self._tx_pending = 0
        try:
            self.sock.send(b"")
            self.counters.tx += pending
        except OSError:
            self.counters.tx_errors += pending

    def update_kernel_drops(self) -> int:
        """Add the drops the kernel counted since the last call (reading resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", raw)
        self.counters.kernel_drops += drops
        return self.counters.kernel_drops

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.sock.close()


def _setup_rings(sock: socket.socket) -> mmap.mmap:
    """TPACKET_V2 RX and TX rings, mapped back to back (RX first)."""
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    per_block = RING_BLOCK_SIZE // RING_FRAME_SIZE
    for opt, frames in ((PACKET_RX_RING, RX_RING_FRAMES), (PACKET_TX_RING, TX_RING_FRAMES)):
        req = struct.pack("IIII", RING_BLOCK_SIZE, frames // per_block, RING_FRAME_SIZE, frames)
        sock.setsockopt(SOL_PACKET, opt, req)
    size = (RX_RING_FRAMES + TX_RING_FRAMES) * RING_FRAME_SIZE
    return mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def _open(number: int, ifname: str, rings: bool) -> Port:
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        raise PortError(f"port {number}: no interface {ifname!r}") from None
    # Protocol 0 until bind: an unbound ETH_P_ALL socket would queue frames of every
    # interface in the namespace.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    ring = None
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        if rings:
            try:
                ring = _setup_rings(sock)
            except OSError:
                sock.close()  # rings half set up: start over with a plain socket
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        if ring is None:
            for opt, forced, size in (
                (socket.SO_RCVBUF, 33, RCVBUF),  # SO_RCVBUFFORCE: root may exceed rmem_max
                (socket.SO_SNDBUF, 32, SNDBUF),  # SO_SNDBUFFORCE
            ):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, forced, size)
                except PermissionError:
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
        sock.bind((ifname, ETH_P_ALL))
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError as exc:
        if ring is not None:
            ring.close()
        sock.close()
        raise PortError(f"port {number} ({ifname}): {os.strerror(exc.errno or 0)}") from exc
    return Port(number, ifname, sock, ifindex, ring=ring)


def open_ports(
    spec: dict[int, str], netns: str | None = None, *, rings: bool = True
) -> dict[int, Port]:
    """Open every ``{port number: interface}`` inside ``netns``; all or nothing."""

    def open_all() -> dict[int, Port]:
        ports: dict[int, Port] = {}
        try:
            for number, ifname in sorted(spec.items()):
                ports[number] = _open(number, ifname, rings)
        except BaseException:
            for port in ports.values():
                port.close()
            raise
        return ports

    return call_in_netns(netns, open_all)
