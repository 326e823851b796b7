"""What a conformance test does to the switch, in the words of docs/pipeline.md.

:class:`Conformance` sends frames with PTF, checks every frame that comes out (exact bytes
and valid checksums), reads and writes the slot map through packet-out / packet-in, and reads
counters and digests over P4Runtime.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import ptf.testutils as tu
from nmconf_harness import NEGATIVE_TIMEOUT, POSITIVE_TIMEOUT, P4RTSession, PtfTest
from nmconf_world import CLIENT_PORT, FrameSpec, Keyspace, Server, World, nm_of, with_flags
from scapy.packet import Packet
from scapy.utils import checksum

from netmigrate.lab import Host
from netmigrate.protocol.codec import Header
from netmigrate.protocol.constants import (
    CONTROL,
    CONTROL_OPS,
    CPU_PORT,
    PACKET_IN_REASON_SLOT_MAP,
    REPLY_BIT,
    SLOT_COUNT,
    Decision,
    Op,
)

#: The controller's frames (packet-out): any addresses; the switch looks only at IP/UDP dst.
CONTROLLER_MAC = "02:4e:4d:ff:ff:fe"
CONTROLLER_IP = "10.0.0.2"
CONTROLLER_PORT = 39999

_slot_numbers = itertools.count(100)
_request_ids = itertools.count(0x0000_0001_0000_0001)
#: The epoch a test's transitions carry unless it says otherwise: every test migrates a fresh
#: slot (epoch 0 on the switch), and slot_set raises it to this, so the transition of the
#: slot's one migration is accepted.
EPOCH = 1


def checksum_problems(raw: bytes) -> list[str]:
    """What is wrong with the IPv4 header checksum and the UDP checksum of ``raw``."""
    if len(raw) < 34 or raw[12:14] != b"\x08\x00":
        return []
    ihl = (raw[14] & 0x0F) * 4
    problems = []
    if checksum(raw[14 : 14 + ihl]) != 0:
        problems.append(f"bad IPv4 header checksum {raw[24:26].hex()}")
    total_len = struct.unpack_from("!H", raw, 16)[0]
    if raw[23] == 17 and len(raw) >= 14 + ihl + 8:
        udp = raw[14 + ihl : 14 + total_len]
        if udp[6:8] != b"\x00\x00":
            pseudo = raw[26:34] + struct.pack("!BBH", 0, 17, len(udp))
            if checksum(pseudo + udp) != 0:
                problems.append(f"bad UDP checksum {udp[6:8].hex()} (neither 0 nor valid)")
    return problems


@dataclass(slots=True)
class CounterDelta:
    before: dict[int, tuple[int, int]]
    after: dict[int, tuple[int, int]] = field(default_factory=dict)

    def packets(self) -> dict[int, int]:
        """Index -> packets counted in between, only indices that moved."""
        out = {}
        for index, (pkts, _) in self.after.items():
            moved = pkts - self.before.get(index, (0, 0))[0]
            if moved:
                out[index] = moved
        return out

    def bytes(self) -> dict[int, int]:
        out = {}
        for index, (_, nbytes) in self.after.items():
            moved = nbytes - self.before.get(index, (0, 0))[1]
            if moved:
                out[index] = moved
        return out


class Conformance:
    def __init__(self, p4rt: P4RTSession, test: PtfTest, world: World) -> None:
        self.p4rt = p4rt
        self.test = test
        self.world = world
        self._touched: set[tuple[int, int]] = set()
        #: The epoch in the switch's latest SLOT_SET / SLOT_READ answer.
        self.last_epoch = 0

    # --- hygiene between tests ---

    def reset_queues(self) -> None:
        self.test.flush()
        self.p4rt.drain()

    def restore_slots(self) -> None:
        """Put every slot_map entry the test touched back to (default owner, no target)."""
        for ks_id, slot in sorted(self._touched):
            ks = next(k for k in self.world.keyspaces if k.id == ks_id)
            self.slot_set(ks, slot, 0, 0, track=False)
        self._touched.clear()

    def touch(self, ks: Keyspace, slot: int) -> None:
        """Restore ``slot`` after the test (a test that may have changed it by a transition)."""
        self._touched.add((ks.id, slot))

    def fresh_slot(self) -> int:
        """A slot no other test of this session uses (so a failed restore cannot leak)."""
        return next(_slot_numbers)

    # --- frames in and out ---

    def send(self, port: int, pkt: Packet | FrameSpec) -> None:
        raw = pkt.build() if isinstance(pkt, FrameSpec) else pkt
        tu.send_packet(self.test, port, bytes(raw))

    def expect(
        self,
        port: int,
        exp: Packet | FrameSpec,
        timeout: float = POSITIVE_TIMEOUT,
        *,
        check_checksums: bool = True,
    ) -> bytes:
        """The next matching frame on ``port``; fails unless it is exactly ``exp``.

        Every frame a test expects must also carry valid checksums, except where the spec
        says a wrong one is passed on (``check_checksums=False``).
        """
        pkt = exp.build() if isinstance(exp, FrameSpec) else exp
        result = tu.dp_poll(self.test, 0, port, timeout=timeout, exp_pkt=pkt)
        if isinstance(result, self.test.dataplane.PollFailure):
            raise AssertionError(f"expected frame not received on port {port}:\n{result.format()}")
        if check_checksums:
            problems = checksum_problems(result.packet)
            assert not problems, f"frame on port {port}: {problems}"
        return result.packet

    def expect_none(self, timeout: float = NEGATIVE_TIMEOUT) -> None:
        """No other frame on any port and no packet-in."""
        tu.verify_no_other_packets(self.test, 0, timeout=timeout)
        pins = self.p4rt.drain_packet_ins()
        assert not pins, f"unexpected packet-in(s): {pins}"

    # --- requests as the client and the servers send them ---

    def header(self, op: int, ks: Keyspace, slot: int, **fields: Any) -> Header:
        return Header(op=op, keyspace=ks.id, slot=slot, request_id=next(_request_ids), **fields)

    def from_client(
        self, header: Header | None, ks: Keyspace, *, payload: bytes = b"", **kw: Any
    ) -> FrameSpec:
        c = self.world.client
        return FrameSpec(
            eth_src=c.mac,
            eth_dst=c.switch_mac,
            ip_src=c.ip,
            ip_dst=ks.ip,
            sport=CLIENT_PORT,
            dport=ks.udp_port,
            header=header,
            payload=payload,
            **kw,
        )

    def from_server(
        self,
        server: Server,
        header: Header,
        ks: Keyspace,
        *,
        ip_src: str | None = None,
        port: int | None = None,
        epoch: int | None = EPOCH,
    ) -> tuple[int, FrameSpec]:
        """(ingress port, frame) of a datagram server ``server`` sends to ``ks``'s address;
        a control op carries ``epoch`` (None: no control body)."""
        h = server.host
        payload = b""
        if header.op in CONTROL_OPS and epoch is not None:
            payload = CONTROL.pack(epoch)
        spec = FrameSpec(
            eth_src=h.mac,
            eth_dst=h.switch_mac,
            ip_src=ip_src or h.ip,
            ip_dst=ks.ip,
            sport=server.udp_port,
            dport=ks.udp_port,
            header=header,
            payload=payload,
        )
        if header.op in (Op.SLOT_START, Op.SLOT_COMPLETE) and header.slot < SLOT_COUNT:
            self._touched.add((ks.id, header.slot))
        return (port if port is not None else server.port), spec

    # --- what the switch must make of them ---

    @staticmethod
    def steered(sent: FrameSpec, server: Server, add_flags: int = 0) -> FrameSpec:
        """``sent`` as steered to ``server``: MAC/IP/UDP port rewritten, TTL-1, UDP csum 0."""
        assert sent.header is not None
        return replace(
            sent,
            eth_dst=server.mac,
            ip_dst=server.ip,
            dport=server.udp_port,
            ttl=sent.ttl - 1,
            udp_chksum=0,
            header=with_flags(sent.header, add_flags),
        )

    @staticmethod
    def plain(sent: FrameSpec, to: Host) -> FrameSpec:
        """``sent`` as plain-forwarded to host ``to``: dst MAC and TTL change, nothing else."""
        return replace(sent, eth_dst=to.mac, ttl=sent.ttl - 1)

    # --- the slot map through the CPU port ---

    def cpu_frame(self, ks: Keyspace, header: Header, epoch: int | None = 0) -> FrameSpec:
        return FrameSpec(
            eth_src=CONTROLLER_MAC,
            eth_dst=self.world.client.switch_mac,
            ip_src=CONTROLLER_IP,
            ip_dst=ks.ip,
            sport=CONTROLLER_PORT,
            dport=ks.udp_port,
            header=header,
            payload=b"" if epoch is None else CONTROL.pack(epoch),
            # The switch answers with the same frame, NetMigrate header changed: a UDP
            # checksum of 0 ("none") stays valid, a computed one would not.
            udp_chksum=0,
        )

    def cpu_op(self, ks: Keyspace, header: Header, epoch: int = 0) -> tuple[int, int]:
        """Send SLOT_SET / SLOT_READ (with ``epoch``) as packet-out; check the packet-in;
        (owner_raw, target). The slot's epoch it answers is kept in ``last_epoch``."""
        spec = self.cpu_frame(ks, header, epoch)
        self.p4rt.packet_out(bytes(spec.build()), submit=True)
        pin = self.p4rt.next_packet_in()
        assert pin is not None, f"no packet-in answered {Op(header.op).name} slot {header.slot}"
        assert pin.metadata.get("ingress_port") == CPU_PORT, pin
        assert pin.metadata.get("reason") == PACKET_IN_REASON_SLOT_MAP, pin
        reply = nm_of(pin.payload)
        self.last_epoch = CONTROL.unpack_from(pin.payload, len(pin.payload) - CONTROL.size)[0]
        expected = replace(
            spec,
            header=replace(
                header,
                op=header.op | REPLY_BIT,
                source_id=reply.source_id,
                target_id=reply.target_id,
            ),
            payload=CONTROL.pack(self.last_epoch),
        ).build()
        assert pin.payload == bytes(expected), (
            f"packet-in is not the request frame with op|REPLY_BIT and the slot's ids and "
            f"epoch:\n"
            f"got      {pin.payload.hex()}\nexpected {bytes(expected).hex()}"
        )
        return reply.source_id, reply.target_id

    def slot_set(
        self,
        ks: Keyspace,
        slot: int,
        owner: int,
        target: int,
        *,
        track: bool = True,
        epoch: int = EPOCH,
    ) -> tuple[int, int]:
        """Write the slot's entry; its epoch becomes at least ``epoch`` (never lower)."""
        if track:
            self._touched.add((ks.id, slot))
        header = self.header(Op.SLOT_SET, ks, slot, source_id=owner, target_id=target)
        got = self.cpu_op(ks, header, epoch)
        assert got == (owner, target), f"SLOT_SET {ks.id}/{slot} := {owner},{target} gave {got}"
        assert self.last_epoch >= epoch, f"SLOT_SET {ks.id}/{slot} epoch {epoch}: {self.last_epoch}"
        return got

    def slot_read(self, ks: Keyspace, slot: int) -> tuple[int, int]:
        return self.cpu_op(ks, self.header(Op.SLOT_READ, ks, slot))

    def epoch_read(self, ks: Keyspace, slot: int) -> int:
        """The slot's epoch on the switch (SLOT_READ's answer)."""
        self.slot_read(ks, slot)
        return self.last_epoch

    # --- counters and digests ---

    @contextmanager
    def counting(self, name: str = "decision_counter") -> Iterator[CounterDelta]:
        delta = CounterDelta(before=self.p4rt.counters(name))
        yield delta
        delta.after = self.p4rt.counters(name)

    def decisions(self, delta: CounterDelta) -> dict[str, int]:
        return {Decision(i).name: n for i, n in delta.packets().items()}

    def expect_digest(self, timeout: float = POSITIVE_TIMEOUT) -> dict[str, int]:
        digest = self.p4rt.next_digest(timeout)
        assert digest is not None, "no slot_transition_t digest"
        assert len(digest.data) == 1, digest
        return {k: int(v) for k, v in digest.data[0].items()}

    def expect_no_digest(self, timeout: float = NEGATIVE_TIMEOUT) -> None:
        digest = self.p4rt.next_digest(timeout)
        assert digest is None, f"unexpected digest {digest}"
