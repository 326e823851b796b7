"""Plain IPv4 forwarding and everything the parser leaves unsteered."""

from __future__ import annotations

from pipeline_lab import (
    CLIENT,
    DEFAULT_OWNER,
    SERVERS,
    SERVICE_IP,
    SERVICE_PORT,
    SWITCH_MAC,
    MemoryState,
    ipv4_checksum_ok,
    parse,
    plain_copy,
    request,
)
from scapy.layers.inet import IP, UDP, IPOption_RR
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from netmigrate.protocol.constants import REPLY_BIT, Decision, Op
from netmigrate.switch.pipeline import process

OPS = "NetMigrateIngress.op_counter"


def udp(dst: str, dport: int, payload: bytes = b"hello", ttl: int = 64, **ip: object) -> bytes:
    return bytes(
        Ether(src=CLIENT.mac, dst=SWITCH_MAC)
        / IP(src=CLIENT.ip, dst=dst, ttl=ttl, **ip)
        / UDP(sport=1234, dport=dport)
        / Raw(payload)
    )


def test_plain_udp_is_forwarded_by_lpm(state: MemoryState) -> None:
    server = SERVERS[2]
    frame = udp(server.ip, 9999)
    [out] = process(frame, CLIENT.port, state)
    assert out.port == server.port
    assert out.frame == plain_copy(Ether(frame), server)
    assert ipv4_checksum_ok(out.frame)
    assert parse(out.frame)[IP].ttl == 63
    # UDP checksum and payload untouched: only TTL and MAC changed.
    assert out.frame[34:] == frame[34:]
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}
    assert state.counters[OPS] == {}


def test_longest_prefix_wins(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.add_entry(
        t + "ipv4_lpm",
        {"hdr.ipv4.dstAddr": (0x0A000000, 8)},
        t + "ipv4_forward",
        dst_mac=0x020000000099,
        port=9,
    )
    [near] = process(udp(SERVERS[3].ip, 9), CLIENT.port, state)
    [far] = process(udp("10.9.9.9", 9), CLIENT.port, state)
    assert near.port == SERVERS[3].port
    assert far.port == 9
    assert parse(far.frame)[Ether].dst == "02:00:00:00:00:99"


def test_no_route_is_dropped_and_counted(state: MemoryState) -> None:
    frame = udp("192.168.1.1", 9999)
    assert process(frame, CLIENT.port, state) == []
    assert state.decisions() == {Decision.NO_ROUTE: 1}
    assert state.counter("NetMigrateIngress.decision_counter", Decision.NO_ROUTE) == (1, len(frame))


def test_default_route_set_by_the_controller(state: MemoryState) -> None:
    state.set_default(
        "NetMigrateIngress.ipv4_lpm",
        "NetMigrateIngress.ipv4_forward",
        dst_mac=0x020000000077,
        port=7,
    )
    [out] = process(udp("192.168.1.1", 9999), CLIENT.port, state)
    assert out.port == 7
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}


def test_not_ipv4_is_dropped_uncounted(state: MemoryState) -> None:
    arp = bytes(Ether(src=CLIENT.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=SERVERS[1].ip))
    assert process(arp, CLIENT.port, state) == []
    assert process(b"\x00" * 10, CLIENT.port, state) == []  # too short for Ethernet
    short_ip = udp(SERVERS[1].ip, 9)[: 14 + 19]  # ethertype IPv4, header cut short
    assert process(short_ip, CLIENT.port, state) == []
    assert state.decisions() == {}


def test_bad_ipv4_checksum_is_dropped_and_counted_as_such(state: MemoryState) -> None:
    frame = bytearray(udp(SERVERS[1].ip, 9))
    frame[24] ^= 0x01
    assert process(bytes(frame), CLIENT.port, state) == []
    frame[24:26] = b"\xff\xff"  # csum16 never yields 0xFFFF
    assert process(bytes(frame), CLIENT.port, state) == []
    long = bytearray(udp(SERVERS[1].ip, 9, payload=bytes(64)))  # past the NetMigrate header
    long[24] ^= 0x01
    assert process(bytes(long), CLIENT.port, state) == []
    assert state.decisions() == {Decision.BAD_CHECKSUM: 3}


def test_ttl_is_decremented_modulo_256(state: MemoryState) -> None:
    [out] = process(udp(SERVERS[1].ip, 9, ttl=0), CLIENT.port, state)
    assert parse(out.frame)[IP].ttl == 255
    assert ipv4_checksum_ok(out.frame)


def test_non_netmigrate_udp_to_the_service_address_is_untouched(state: MemoryState) -> None:
    frame = udp(SERVICE_IP, 53, payload=bytes(range(40)))
    [out] = process(frame, CLIENT.port, state)
    owner = SERVERS[DEFAULT_OWNER]
    assert out.port == owner.port  # the service address's route
    assert out.frame == plain_copy(Ether(frame), owner)
    assert state.counters[OPS] == {}


def test_request_to_an_unknown_keyspace_goes_plain(state: MemoryState) -> None:
    server = SERVERS[3]
    sent = request(Op.GET, dst_ip=server.ip, dport=50000)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.port == server.port
    assert out.frame == plain_copy(sent, server)
    assert state.counter(OPS, Op.GET)[0] == 1
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}


def test_replies_are_forwarded_plainly(state: MemoryState) -> None:
    # A reply addressed to the service address and port (e.g. a client on port 50010) must not
    # be steered: only requests are.
    state.set_slot(7 + 16384, 2, 3)
    sent = request(Op.GET | REPLY_BIT, flags=0x03)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.frame == plain_copy(sent, SERVERS[DEFAULT_OWNER])
    assert state.counter(OPS, Op.GET | REPLY_BIT)[0] == 1
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}
    assert state.calls["table:NetMigrateIngress.keyspace"] == 0  # no side effect to model


def test_unknown_op_goes_plain(state: MemoryState) -> None:
    sent = request(0x30)
    [out] = process(bytes(sent), CLIENT.port, state)
    assert out.frame == plain_copy(sent, SERVERS[DEFAULT_OWNER])
    assert state.counter(OPS, 0x30)[0] == 1


def test_truncated_netmigrate_header_goes_plain_untouched(state: MemoryState) -> None:
    frame = udp(SERVICE_IP, SERVICE_PORT, payload=bytes(range(17)))  # one byte short
    [out] = process(frame, CLIENT.port, state)
    assert out.frame == plain_copy(Ether(frame), SERVERS[DEFAULT_OWNER])
    assert state.counters[OPS] == {}
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}


def test_truncated_udp_header_goes_plain(state: MemoryState) -> None:
    frame = udp(SERVERS[2].ip, SERVICE_PORT)
    ip_only = bytearray(frame[: 14 + 20 + 4])
    ip_only[16:18] = (20 + 4).to_bytes(2, "big")  # totalLen
    pkt = Ether(bytes(ip_only))
    del pkt[IP].chksum
    short = bytes(pkt)[: 14 + 24]
    [out] = process(short, CLIENT.port, state)
    assert out.port == SERVERS[2].port
    assert out.frame[34:] == short[34:]


def test_ip_options_are_not_parsed_and_keep_a_correct_checksum(state: MemoryState) -> None:
    sent = request(Op.GET)
    sent[IP].options = [IPOption_RR(routers=["1.2.3.4"])]
    frame = bytes(sent)
    assert frame[14] & 0x0F > 5
    [out] = process(frame, CLIENT.port, state)
    owner = SERVERS[DEFAULT_OWNER]
    assert out.port == owner.port
    assert out.frame == plain_copy(Ether(frame), owner)
    assert ipv4_checksum_ok(out.frame)
    assert state.counters[OPS] == {}  # nm not parsed behind options


def test_ip_options_with_a_wrong_checksum_stay_wrong(state: MemoryState) -> None:
    sent = request(Op.GET)
    sent[IP].options = [IPOption_RR(routers=["1.2.3.4"])]
    frame = bytearray(bytes(sent))
    frame[24] ^= 0x10
    [out] = process(bytes(frame), CLIENT.port, state)
    assert not ipv4_checksum_ok(out.frame)
    assert parse(out.frame)[IP].ttl == 63


def test_fragments_are_not_parsed_as_udp(state: MemoryState) -> None:
    for ip_fields in ({"flags": "MF"}, {"frag": 100}):
        sent = request(Op.SET)
        for k, v in ip_fields.items():
            setattr(sent[IP], k, v)
        state.counters[OPS].clear()
        [out] = process(bytes(sent), CLIENT.port, state)
        assert out.frame == plain_copy(Ether(bytes(sent)), SERVERS[DEFAULT_OWNER])
        assert state.counters[OPS] == {}
    # DF alone is not a fragment.
    sent = request(Op.SET)
    sent[IP].flags = "DF"
    [out] = process(bytes(sent), CLIENT.port, state)
    assert state.counter(OPS, Op.SET)[0] == 1
    assert state.decisions()[Decision.TO_OWNER] == 1


def test_route_to_the_cpu_port_is_a_packet_in_with_reason_zero(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.add_entry(
        t + "ipv4_lpm",
        {"hdr.ipv4.dstAddr": (0xC0A80000, 16)},
        t + "ipv4_forward",
        dst_mac=0x020000000001,
        port=state.cpu_port,
    )
    [out] = process(udp("192.168.0.1", 9), CLIENT.port, state)
    assert out.port == state.cpu_port
    assert out.metadata == {"ingress_port": CLIENT.port, "reason": 0}
    assert parse(out.frame)[IP].dst == "192.168.0.1"  # no packet_in header in the frame


def test_bmv2_drop_port_means_no_output(state: MemoryState) -> None:
    t = "NetMigrateIngress."
    state.add_entry(
        t + "ipv4_lpm",
        {"hdr.ipv4.dstAddr": (0xC0A80000, 16)},
        t + "ipv4_forward",
        dst_mac=0x020000000001,
        port=511,
    )
    assert process(udp("192.168.0.1", 9), CLIENT.port, state) == []
    assert state.decisions() == {Decision.PLAIN_FORWARD: 1}


def test_memoryview_frames_are_accepted(state: MemoryState) -> None:
    frame = udp(SERVERS[2].ip, 9999)
    [a] = process(frame, CLIENT.port, state)
    [b] = process(memoryview(frame), CLIENT.port, state)
    assert a == b
    assert type(b.frame) is bytes
