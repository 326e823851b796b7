"""Plain IPv4 forwarding and everything the pipeline must leave unsteered (docs/pipeline.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nmconf_driver import Conformance
from nmconf_world import CLIENT_PORT, FrameSpec
from scapy.layers.l2 import ARP, Ether

from netmigrate.protocol.constants import REPLY_BIT, Op

pytestmark = pytest.mark.root


def test_plain_udp_is_forwarded_with_ttl_decremented_and_checksums_valid(sw: Conformance):
    client, r2 = sw.world.client, sw.world.servers[2].host
    sent = FrameSpec(
        eth_src=client.mac,
        eth_dst=client.switch_mac,
        ip_src=client.ip,
        ip_dst=r2.ip,
        sport=5353,
        dport=53,
        payload=b"not netmigrate" * 3,
    )
    with sw.counting() as delta:
        sw.send(client.switch_port, sent)
        raw = sw.expect(r2.switch_port, sw.plain(sent, r2))
    sw.expect_none()
    # Only the destination MAC, the TTL and (hence) the IPv4 checksum differ from what was sent.
    original = bytes(sent.build())
    diff = [i for i in range(len(raw)) if raw[i] != original[i]]
    assert all(i < 6 or i in (22, 24, 25) for i in diff), diff
    assert raw[22] == 63
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}


def test_each_host_route_goes_to_its_port(sw: Conformance):
    client = sw.world.client
    for host in sw.world.topology.hosts[1:]:
        sent = FrameSpec(
            eth_src=client.mac,
            eth_dst=client.switch_mac,
            ip_src=client.ip,
            ip_dst=host.ip,
            sport=1000,
            dport=2000,
            payload=host.name.encode(),
        )
        sw.send(client.switch_port, sent)
        sw.expect(host.switch_port, sw.plain(sent, host))
    # And back from a server to the client.
    r3 = sw.world.servers[3].host
    back = FrameSpec(
        eth_src=r3.mac,
        eth_dst=r3.switch_mac,
        ip_src=r3.ip,
        ip_dst=client.ip,
        sport=2000,
        dport=1000,
        payload=b"back",
    )
    sw.send(r3.switch_port, back)
    sw.expect(client.switch_port, sw.plain(back, client))
    sw.expect_none()


def test_no_route_is_dropped_and_counted(sw: Conformance):
    client = sw.world.client
    sent = FrameSpec(
        eth_src=client.mac,
        eth_dst=client.switch_mac,
        ip_src=client.ip,
        ip_dst="192.0.2.1",
        sport=1,
        dport=2,
        payload=b"nowhere",
    )
    with sw.counting() as delta:
        sw.send(client.switch_port, sent)
        sw.expect_none()
    assert sw.decisions(delta) == {"NO_ROUTE": 1}


def test_non_ipv4_is_dropped_and_not_counted(sw: Conformance):
    client = sw.world.client
    arp = Ether(src=client.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc=client.mac, psrc=client.ip, pdst=sw.world.servers[1].ip
    )
    with sw.counting() as delta:
        sw.send(client.switch_port, arp)
        sw.expect_none()
    assert delta.packets() == {}


def test_reply_to_a_service_address_is_forwarded_plainly(sw: Conformance):
    """A reply (op | REPLY_BIT) is never steered, even when it hits the keyspace table."""
    ka = sw.world.ka
    server2 = sw.world.servers[2]
    slot = sw.fresh_slot()
    reply = sw.header(Op.GET | REPLY_BIT, ka, slot)
    port, sent = sw.from_server(server2, reply, ka)
    r1 = sw.world.servers[1].host  # KA's service address is server 1's IP
    with sw.counting("op_counter") as ops, sw.counting() as delta:
        sw.send(port, sent)
        sw.expect(r1.switch_port, sw.plain(sent, r1))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {Op.GET | REPLY_BIT: 1}


def test_reply_to_the_client_is_forwarded_plainly(sw: Conformance):
    client = sw.world.client
    server1 = sw.world.servers[1]
    ka = sw.world.ka
    reply = sw.header(Op.SET | REPLY_BIT, ka, sw.fresh_slot())
    sent = FrameSpec(
        eth_src=server1.mac,
        eth_dst=server1.host.switch_mac,
        ip_src=server1.ip,
        ip_dst=client.ip,
        sport=server1.udp_port,
        dport=CLIENT_PORT,
        header=reply,
        payload=b"\x01",
    )
    sw.send(server1.port, sent)
    sw.expect(client.switch_port, sw.plain(sent, client))
    sw.expect_none()


def test_unknown_op_to_a_keyspace_is_forwarded_plainly(sw: Conformance):
    ka = sw.world.ka
    r1 = sw.world.servers[1].host
    sent = sw.from_client(sw.header(0x33, ka, sw.fresh_slot()), ka)
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(r1.switch_port, sw.plain(sent, r1))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {0x33: 1}


def test_netmigrate_to_an_address_that_is_no_keyspace_is_plain_but_counted_by_op(sw: Conformance):
    """In the service port range but no keyspace entry: parsed (op counted), not steered."""
    ka = sw.world.ka
    server3 = sw.world.servers[3]
    sent = replace(
        sw.from_client(sw.header(Op.GET, ka, sw.fresh_slot()), ka),
        ip_dst=server3.ip,
        dport=server3.udp_port,
    )
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(server3.port, sw.plain(sent, server3.host))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {Op.GET: 1}


def test_truncated_netmigrate_header_is_forwarded_as_plain_ipv4(sw: Conformance):
    ka = sw.world.ka
    r1 = sw.world.servers[1].host
    header = sw.header(Op.SET, ka, sw.fresh_slot()).pack()
    for cut in (1, 10, len(header) - 1):
        sent = sw.from_client(None, ka, payload=header[:cut])
        with sw.counting() as delta, sw.counting("op_counter") as ops:
            sw.send(sw.world.client.switch_port, sent)
            sw.expect(r1.switch_port, sw.plain(sent, r1))
            sw.expect_none()
        assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}, cut
        assert ops.packets() == {}, cut


def test_ipv4_with_options_is_not_parsed_further(sw: Conformance):
    """IHL != 5: UDP and NetMigrate are not parsed; a request is forwarded as plain IPv4."""
    ka = sw.world.ka
    r1 = sw.world.servers[1].host
    sent = sw.from_client(sw.header(Op.SET, ka, sw.fresh_slot()), ka, ip_options=True)
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(sw.world.client.switch_port, sent)
        sw.expect(r1.switch_port, sw.plain(sent, r1))
        sw.expect_none()
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {}


def test_packet_out_without_submit_goes_to_its_port_unchanged(sw: Conformance):
    r2 = sw.world.servers[2].host
    frame = FrameSpec(
        eth_src="02:00:00:00:00:01",
        eth_dst=r2.mac,
        ip_src="10.0.0.2",
        ip_dst="192.0.2.99",  # no route: it must not go through the tables
        sport=7,
        dport=sw.world.ka.udp_port,
        payload=b"direct",
    )
    with sw.counting() as delta:
        sw.p4rt.packet_out(bytes(frame.build()), egress_port=r2.switch_port, submit=False)
        sw.expect(r2.switch_port, frame)
        sw.expect_none()
    assert delta.packets() == {}
