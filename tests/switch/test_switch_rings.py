"""The PACKET_MMAP RX ring reader on a real veth: order, a slot the kernel leaves empty, a slot
filled late, and the watchdog's resync. The ring states are made by editing slot status
words the way the kernel would leave them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from netmigrate.lab.veth_topology import VethTopology, host_socket, veth_topology
from netmigrate.switch.ports import (
    HOLE_AFTER,
    RING_FRAME_SIZE,
    RX_RING_FRAMES,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    Port,
    open_ports,
)


def frame(i: int) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x88\xb5" + i.to_bytes(4, "big") * 12


def ids(frames: list[bytes]) -> list[int]:
    return [int.from_bytes(f[14:18], "big") for f in frames]


def set_status(port: Port, slot: int, status: int) -> None:
    assert port.ring is not None
    port.ring[slot * RING_FRAME_SIZE : slot * RING_FRAME_SIZE + 4] = status.to_bytes(4, "little")


@pytest.fixture
def ring_port(needs_root) -> Iterator[tuple[Port, object, VethTopology]]:
    with veth_topology([1]) as topo:
        ports = open_ports({1: "sw1"}, topo.switch_ns)
        sender = host_socket(topo.hosts[1])
        try:
            assert ports[1].uses_rings
            yield ports[1], sender, topo
        finally:
            sender.close()
            ports[1].close()


def test_frames_come_in_order_across_laps(ring_port):
    port, sender, _ = ring_port
    got: list[int] = []
    total = 17 * 500  # two laps of the ring and then some
    for start in range(0, total, 500):
        for i in range(start, start + 500):
            sender.send(frame(i))
        while batch := port.receive(256):
            got += ids(batch)
    assert got == list(range(total))


def test_an_empty_slot_is_waited_for_then_skipped_and_a_late_fill_dropped(ring_port):
    port, sender, _ = ring_port
    for i in range(10):
        sender.send(frame(i))
    set_status(port, 3, TP_STATUS_KERNEL)  # as if the kernel never finished slot 3
    assert ids(port.receive(256)) == [0, 1, 2]
    assert port.receive(256) == []  # maybe a copy in flight: wait
    time.sleep(HOLE_AFTER * 2)
    assert ids(port.receive(256)) == [4, 5, 6, 7, 8, 9]
    assert port.counters.ring_holes == 1
    # Slot 3 is filled after all, late: when the reader comes round, that old frame is
    # dropped, not delivered between newer ones.
    set_status(port, 3, TP_STATUS_USER)
    got: list[int] = []
    for i in range(10, RX_RING_FRAMES + 10):
        sender.send(frame(i))
        if i % 256 == 0:
            got += ids(port.receive(256))
    while batch := port.receive(256):
        got += ids(batch)
    assert port.counters.ring_stale == 1
    assert got == sorted(got) and 3 not in got
    # The kernel could not fill slot 3 while it held the old frame: those frames were lost,
    # every other one arrived.
    assert len(got) + port.update_kernel_drops() == RX_RING_FRAMES


def test_resync_continues_from_the_oldest_frame(ring_port):
    port, sender, _ = ring_port
    for i in range(5):
        sender.send(frame(i))
    port._rx_index = 40  # reader and kernel disagree: nothing at our index
    assert port.receive(256) == []
    assert port.resync()
    assert port._rx_index == 0 and port.counters.ring_resyncs == 1
    assert ids(port.receive(256)) == [0, 1, 2, 3, 4]
    assert not port.resync()  # nothing to fix any more
