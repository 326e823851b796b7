"""Edges of the spec: short frames, jumbo frames, the CPU port as a route and as a sender."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nmconf_driver import Conformance
from nmconf_world import FrameSpec
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netmigrate.protocol.constants import HEADER_LEN, IPV4_UDP_OVERHEAD, LAB_MTU, Flag, Op

pytestmark = pytest.mark.root


def test_frame_too_short_for_ipv4_is_not_ipv4(sw: Conformance):
    client = sw.world.client
    stub = Ether(src=client.mac, dst=client.switch_mac, type=0x0800) / Raw(b"\x45" + b"\x00" * 9)
    with sw.counting() as delta:
        sw.send(client.switch_port, stub)
        sw.expect_none()
    assert delta.packets() == {}


def test_frame_too_short_for_udp_is_plain_ipv4(sw: Conformance):
    client, r2 = sw.world.client, sw.world.servers[2].host
    # IPv4 says UDP, but only 4 of the UDP header's 8 bytes follow.
    ip = IP(src=client.ip, dst=r2.ip, proto=17, ttl=64, id=7) / Raw(b"\xc3\x50\xc3\x50")
    sent = Ether(bytes(Ether(src=client.mac, dst=client.switch_mac) / ip))
    expected = Ether(bytes(sent))
    expected.dst = r2.mac
    expected[IP].ttl = 63
    expected[IP].chksum = None
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(client.switch_port, sent)
        sw.expect(r2.switch_port, Ether(bytes(expected)))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {}


def test_jumbo_request_is_steered_whole(sw: Conformance):
    """A request as large as the lab MTU allows crosses the switch intact."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 0, 3)
    room = LAB_MTU - IPV4_UDP_OVERHEAD - HEADER_LEN
    body = bytes(range(256)) * (room // 256) + b"z" * (room % 256)
    sent = sw.from_client(sw.header(Op.GET, ka, slot), ka, payload=body)
    owner, target = sw.world.servers[1], sw.world.servers[3]
    sw.send(sw.world.client.switch_port, sent)
    raw = sw.expect(owner.port, sw.steered(sent, owner, Flag.DOUBLE_READ))
    sw.expect(target.port, sw.steered(sent, target, Flag.DOUBLE_READ | Flag.TO_TARGET))
    sw.expect_none()
    assert len(raw) == 14 + LAB_MTU


def test_route_to_the_cpu_port_is_a_packet_in_with_reason_0(sw: Conformance):
    client = sw.world.client
    ip, mac = sw.world.cpu_route
    sent = FrameSpec(
        eth_src=client.mac,
        eth_dst=client.switch_mac,
        ip_src=client.ip,
        ip_dst=ip,
        sport=1,
        dport=9,
        payload=b"to the controller",
    )
    sw.send(client.switch_port, sent)
    pin = sw.p4rt.next_packet_in()
    assert pin is not None
    assert pin.metadata == {"ingress_port": client.switch_port, "reason": 0}
    assert pin.payload == bytes(replace(sent, eth_dst=mac, ttl=63).build())
    sw.expect_none()


def test_controller_injected_request_is_steered_like_any_other(sw: Conformance):
    """packet-out with submit_to_ingress: a frame from CPU_PORT through the whole ingress."""
    ka = sw.world.ka
    slot = sw.fresh_slot()
    sw.slot_set(ka, slot, 0, 2)
    owner, target = sw.world.servers[1], sw.world.servers[2]
    sent = sw.from_client(sw.header(Op.SET, ka, slot), ka, payload=b"\x00\x01k")
    with sw.counting() as delta:
        sw.p4rt.packet_out(bytes(sent.build()))
        sw.expect(target.port, sw.steered(sent, target, Flag.TO_TARGET))
        sw.expect_none()
    assert sw.decisions(delta) == {"REDIRECTED": 1}
    plain = FrameSpec(
        eth_src="02:00:00:00:00:01",
        eth_dst="02:00:00:00:00:02",
        ip_src="10.0.0.2",
        ip_dst=owner.ip,
        sport=5,
        dport=6,
        payload=b"routed",
    )
    sw.p4rt.packet_out(bytes(plain.build()))
    sw.expect(owner.port, sw.plain(plain, owner.host))
    sw.expect_none()


def test_slot_ops_to_an_address_that_is_no_keyspace_are_plain_ipv4(sw: Conformance):
    """The keyspace lookup comes first: SLOT_SET to a non-service address is just routed."""
    server3 = sw.world.servers[3]
    header = sw.header(Op.SLOT_SET, sw.world.ka, sw.fresh_slot(), source_id=2)
    sent = replace(sw.cpu_frame(sw.world.ka, header), ip_dst=server3.ip, dport=server3.udp_port)
    with sw.counting() as delta:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(server3.port, sw.plain(sent, server3.host))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
