"""Ethernet/IPv4/UDP frames that the controller injects with packet-out (and parses back).

Standard header layouts only; the NetMigrate header itself comes from
:mod:`netmigrate.protocol.codec`. The IPv4 checksum is correct (the pipeline verifies it) and
the UDP checksum is 0 (none), as the switch writes it on steered packets.
"""

from __future__ import annotations

import ipaddress
import struct

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17
#: Locally administered MACs: the switch's keyspace lookup ignores them.
CONTROLLER_MAC = bytes.fromhex("020000000fe0")
SWITCH_MAC = bytes.fromhex("020000000fe1")
DEFAULT_TTL = 64


def _ip(value: str | int | bytes) -> bytes:
    if isinstance(value, bytes):
        if len(value) != 4:
            raise ValueError(f"an IPv4 address has 4 bytes, got {len(value)}")
        return value
    return ipaddress.IPv4Address(value).packed


def ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(
    payload: bytes,
    *,
    dst_ip: str | int | bytes,
    dst_port: int,
    src_ip: str | int | bytes = "0.0.0.0",
    src_port: int = 0,
    dst_mac: bytes = SWITCH_MAC,
    src_mac: bytes = CONTROLLER_MAC,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    udp_len = _UDP.size + len(payload)
    total = _IPV4.size + udp_len
    if total > 0xFFFF:
        raise ValueError("datagram too large for IPv4")
    header = _IPV4.pack(0x45, 0, total, 0, 0, ttl, IPPROTO_UDP, 0, _ip(src_ip), _ip(dst_ip))
    header = header[:10] + ipv4_checksum(header).to_bytes(2, "big") + header[12:]
    return (
        _ETH.pack(dst_mac, src_mac, ETHERTYPE_IPV4)
        + header
        + _UDP.pack(src_port, dst_port, udp_len, 0)
        + payload
    )


def udp_payload(frame: bytes) -> bytes | None:
    """The UDP payload of an Ethernet/IPv4/UDP frame, else None."""
    if len(frame) < _ETH.size + _IPV4.size + _UDP.size:
        return None
    if int.from_bytes(frame[12:14], "big") != ETHERTYPE_IPV4:
        return None
    ip = _ETH.size
    ihl = (frame[ip] & 0x0F) * 4
    if frame[ip + 9] != IPPROTO_UDP or ihl < _IPV4.size:
        return None
    udp = ip + ihl
    if len(frame) < udp + _UDP.size:
        return None
    length = int.from_bytes(frame[udp + 4 : udp + 6], "big")
    end = udp + length if length >= _UDP.size else len(frame)
    return frame[udp + _UDP.size : end]
