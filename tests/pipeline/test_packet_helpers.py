"""Header helpers of the pipeline: checksum arithmetic, controller headers, the scapy layer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import checksum
from support.scapy_layer import SERVICE_PORTS, NetMigrate

from netmigrate.protocol.codec import Header
from netmigrate.protocol.constants import HEADER, HEADER_LEN, SERVICE_PORT_BASE, Op
from netmigrate.protocol.layout import (
    NM_LAYOUT,
    decode_packet_in,
    decode_packet_out,
    encode_packet_in,
    encode_packet_out,
)
from netmigrate.switch.packet import (
    ipv4_checksum,
    ipv4_checksum_after_ttl_decrement,
    ipv4_header_ok,
)

headers = st.binary(min_size=20, max_size=20).map(lambda b: bytes([0x45]) + b[1:])


def csum16(data: bytes) -> int:
    """Reference: ones' complement of the folded ones' complement sum, word by word."""
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def without_checksum(header: bytes) -> bytes:
    return header[:10] + b"\x00\x00" + header[12:]


@given(headers)
def test_checksum_equals_csum16(header: bytes) -> None:
    old = int.from_bytes(header[10:12], "big")
    assert ipv4_checksum(header, old) == csum16(without_checksum(header))


@given(headers)
def test_verification_equals_verify_checksum(header: bytes) -> None:
    expected = csum16(without_checksum(header)) == int.from_bytes(header[10:12], "big")
    assert ipv4_header_ok(header) is expected


@given(headers)
def test_a_computed_checksum_verifies(header: bytes) -> None:
    fixed = header[:10] + csum16(without_checksum(header)).to_bytes(2, "big") + header[12:]
    assert ipv4_header_ok(fixed)
    assert checksum(fixed) == 0  # scapy agrees


@given(headers)
def test_incremental_ttl_update_equals_recomputation_for_valid_headers(header: bytes) -> None:
    valid = bytearray(without_checksum(header))
    valid[10:12] = csum16(bytes(valid)).to_bytes(2, "big")
    ttl, proto = valid[8], valid[9]
    after = bytearray(valid)
    after[8] = (ttl - 1) & 0xFF
    full = csum16(without_checksum(bytes(after)))
    assert ipv4_checksum_after_ttl_decrement(int.from_bytes(valid[10:12], "big"), ttl, proto) == (
        full
    )


def test_scapy_checksums_agree() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", ttl=9) / UDP()
    raw = bytes(pkt)[:20]
    assert ipv4_header_ok(raw)
    assert ipv4_checksum(raw, IP(raw).chksum) == pkt.__class__(raw).chksum


@given(st.integers(0, 511), st.integers(0, 1), st.integers(0, 63))
def test_packet_out_round_trip(port: int, submit: int, pad: int) -> None:
    assert decode_packet_out(encode_packet_out(port, submit, pad)) == (port, submit, pad)


@given(st.integers(0, 511), st.integers(0, 127))
def test_packet_in_round_trip(port: int, reason: int) -> None:
    assert decode_packet_in(encode_packet_in(port, reason)) == (port, reason)


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_packet_out(512),
        lambda: encode_packet_out(1, 2),
        lambda: encode_packet_out(1, 0, 64),
        lambda: encode_packet_in(512, 0),
        lambda: encode_packet_in(1, 128),
        lambda: decode_packet_in(b"\x00"),
        lambda: decode_packet_out(b""),
    ],
)
def test_controller_headers_reject_bad_values(call) -> None:
    with pytest.raises(ValueError, match="packet_"):
        call()


def test_nm_layout_follows_the_protocol_header() -> None:
    assert sum(width for _, _, width in NM_LAYOUT) == HEADER_LEN * 8
    assert [w // 8 for _, _, w in NM_LAYOUT] == [
        struct.calcsize("!" + code) for code in HEADER.format.lstrip("!")
    ]


def test_scapy_layer_encodes_like_the_codec() -> None:
    header = Header(
        op=Op.MSET,
        request_id=0x0102030405060708,
        keyspace=50003,
        slot=16383,
        flags=5,
        status=3,
        source_id=7,
        target_id=9,
    )
    layer = NetMigrate(
        op=Op.MSET,
        request_id=0x0102030405060708,
        keyspace=50003,
        slot=16383,
        flags=5,
        status=3,
        source_id=7,
        target_id=9,
    )
    assert bytes(layer) == header.pack()


def test_scapy_binds_the_whole_service_range() -> None:
    assert SERVICE_PORT_BASE in SERVICE_PORTS and len(SERVICE_PORTS) == 16
    for port in (SERVICE_PORTS[0], SERVICE_PORTS[-1]):
        frame = bytes(Ether() / IP() / UDP(dport=port) / NetMigrate(op=Op.GET))
        assert Ether(frame).haslayer(NetMigrate)
    frame = bytes(Ether() / IP() / UDP(dport=SERVICE_PORTS[-1] + 1) / NetMigrate(op=Op.GET))
    assert not Ether(frame).haslayer(NetMigrate)
    assert (Ether() / IP() / UDP() / NetMigrate())[UDP].dport == SERVICE_PORT_BASE
