"""SlotMapIO against the real pipeline and switch state, over a lossy stand-in for the
P4Runtime stream (the only thing faked here): lost answers are resent, late and foreign
answers are ignored, a SLOT_SET that reads back wrong is an error."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from finsy.p4schema import P4Schema
from finsy.proto import p4r

from netmigrate.lab.forwarding import SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.p4rt import Keyspace, SlotEntry, SlotMapError, SlotMapIO
from netmigrate.p4rt.session import PacketIn
from netmigrate.protocol.constants import SERVICE_PORT_BASE
from netmigrate.resources import p4info_path
from netmigrate.switch import pipeline
from netmigrate.switch.entities import write_update
from netmigrate.switch.p4info import P4InfoIndex, load_p4info
from netmigrate.switch.state import SwitchState

KEYSPACE = Keyspace(1, SERVICE_IP, SERVICE_PORT_BASE)


class LossyStream:
    """Packet-outs go through the real pipeline; some answers are lost or arrive late."""

    def __init__(self, lose_every: int = 7, late_every: int = 11) -> None:
        # Request ids are (random client id << 32 | index); the index decides the fate.
        info = load_p4info(p4info_path())
        self.state = SwitchState(P4InfoIndex(info), 255)
        schema = P4Schema(info)
        for e in netmigrate_entries(lab_servers([1, 2, 3]), cpu_senders=True)[0]:
            te = e.finsy_entry().encode(schema)
            write_update(self.state, p4r.Update(type=p4r.Update.INSERT, entity=te))
        self.is_primary = True
        self.stream_error_count = 0
        self.stream_errors: list = []
        self.sent = 0
        self.lost = 0
        self.lose_every = lose_every
        self.late_every = late_every
        self.late: list[PacketIn] = []
        self.seen: set[int] = set()
        self.queue: asyncio.Queue = asyncio.Queue()
        #: Rewrite the owner byte of every answer (a switch that does not apply SLOT_SET).
        self.tamper_owner: int | None = None

    @contextlib.asynccontextmanager
    async def packet_ins(self):
        yield self.queue

    def poll_packet(self, q: asyncio.Queue) -> PacketIn | None:
        try:
            return q.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def next_packet(self, q: asyncio.Queue, timeout: float) -> PacketIn | None:
        try:
            return await asyncio.wait_for(q.get(), timeout)
        except TimeoutError:
            return None

    async def packet_out(self, payload: bytes, metadata) -> None:
        self.sent += 1
        # A foreign packet-in (someone else's request) on the stream now and then.
        if self.sent % 5 == 0:
            self.queue.put_nowait(PacketIn(b"\x00" * 60, {"reason": 1, "ingress_port": 255}))
        outputs = pipeline.process_packet_out(payload, metadata, self.state)
        # The first answer to every lose_every-th request is lost, to every late_every-th
        # one it comes late; the resent request's answer arrives (deterministic: no flakes).
        rid = int.from_bytes(payload[14 + 20 + 8 + 10 : 14 + 20 + 8 + 18], "big") & 0xFFFFFFFF
        first = rid not in self.seen
        self.seen.add(rid)
        for out in outputs:
            frame = out.frame
            if self.tamper_owner is not None:
                owner_at = 14 + 20 + 8 + 8  # Ethernet, IPv4, UDP, then nm.source_id
                frame = frame[:owner_at] + bytes([self.tamper_owner]) + frame[owner_at + 1 :]
            pin = PacketIn(frame, dict(out.metadata))
            if first and rid % self.lose_every == 0:
                self.lost += 1
                continue
            if first and rid % self.late_every == 0:
                # Delivered after the request timed out and was resent: a late duplicate.
                self.late.append(pin)
                asyncio.get_running_loop().call_later(0.05, self.queue.put_nowait, pin)
                continue
            self.queue.put_nowait(pin)


async def test_lost_and_late_answers_are_resent_and_matched():
    stream = LossyStream()
    io = SlotMapIO(stream, KEYSPACE, window=64, timeout=0.02, attempts=5)  # type: ignore[arg-type]
    wanted = {s: SlotEntry(1 + s % 3, 0) for s in range(0, 3000, 3)}
    assert await io.write(wanted) == wanted
    assert stream.lost > 0 and stream.late and io.resent >= stream.lost + len(stream.late)
    got = await io.read(range(0, 3000))
    assert got == {s: wanted.get(s, SlotEntry(0, 0)) for s in range(3000)}


class _AlwaysNew(set):
    def __contains__(self, item: object) -> bool:
        return False


async def test_nothing_answers_is_an_error_naming_the_slot():
    stream = LossyStream(lose_every=1)
    stream.seen = _AlwaysNew()  # every attempt counts as a first one: all answers are lost
    io = SlotMapIO(stream, KEYSPACE, window=8, timeout=0.01, attempts=3)  # type: ignore[arg-type]
    with pytest.raises(SlotMapError) as info:
        await io.read([42])
    assert "no answer for slot 42 after 3 attempts" in str(info.value)
    assert stream.sent == 3


async def test_write_that_reads_back_differently_is_an_error():
    stream = LossyStream(lose_every=10**9, late_every=10**9)
    stream.tamper_owner = 9
    io = SlotMapIO(stream, KEYSPACE)  # type: ignore[arg-type]
    with pytest.raises(SlotMapError) as info:
        await io.write({0: SlotEntry(2, 0), 1: SlotEntry(2, 0)})
    assert "2 slots read back differently, first slot 0" in str(info.value)
    assert "SlotEntry(owner=9, target=0, epoch=0)" in str(info.value)


def test_bad_arguments():
    stream = LossyStream()
    with pytest.raises(ValueError):
        SlotMapIO(stream, KEYSPACE, window=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SlotEntry(255, 0)


async def test_slot_set_carries_the_epoch_and_the_answers_report_it() -> None:
    stream = LossyStream(lose_every=10**6, late_every=10**6)
    io = SlotMapIO(stream, KEYSPACE)  # type: ignore[arg-type]
    got = await io.write({4: SlotEntry(2, 0, epoch=5)})
    assert (got[4], got[4].epoch) == (SlotEntry(2, 0), 5)
    # A rewrite without an epoch keeps the switch's: epochs never go back.
    got = await io.write({4: SlotEntry(3, 0)})
    assert (got[4], got[4].epoch) == (SlotEntry(3, 0), 5)
    read = await io.read([4, 5])
    assert (read[4].epoch, read[5].epoch) == (5, 0)
