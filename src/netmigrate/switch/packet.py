"""Ethernet / IPv4 / UDP layouts and the IPv4 checksum arithmetic of the lab switch's pipeline.

The pipeline (:mod:`netmigrate.switch.pipeline`) works on raw frames with
``struct.unpack_from`` / ``int.from_bytes`` at fixed offsets; this module holds the offsets of
the standard headers and the checksum arithmetic, so that no packet path builds objects per
header. The NetMigrate header and the controller headers are the protocol's
(:mod:`netmigrate.protocol.layout`).
"""

from __future__ import annotations

# --- Ethernet / IPv4 / UDP: standard layouts, not NetMigrate protocol numbers ------------------

ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17
ETH_LEN = 14
IPV4_LEN = 20  # without options (IHL 5)
UDP_LEN = 8
#: IHL of an IPv4 header without options; the pipeline parses UDP only behind such a header.
IPV4_IHL_NO_OPTIONS = 5

#: Offsets inside an IPv4 header.
IP_FLAGS_FRAG = 6
IP_TTL = 8
IP_PROTO = 9
IP_CSUM = 10
IP_SRC = 12
IP_DST = 16
#: IPv4 flags + fragment offset word: MF flag and offset. A datagram is a fragment when any is set.
IP_FRAG_MASK = 0x3FFF
#: Offsets inside a UDP header.
UDP_DPORT = 2
UDP_CSUM = 6

#: Egress port that BMv2 treats as "drop" (``mark_to_drop`` sets it; 9-bit ports).
DROP_PORT = 511
#: ``standard_metadata.instance_type`` of an ingress-to-egress clone in BMv2.
PKT_INSTANCE_TYPE_NORMAL = 0
PKT_INSTANCE_TYPE_INGRESS_CLONE = 1

# --- IPv4 header checksum -----------------------------------------------------------------------
#
# 2**16 == 1 (mod 0xFFFF), so the ones' complement sum of a header's 16-bit words is congruent to
# the header read as one big integer, modulo 0xFFFF. That turns the checksum into one
# int.from_bytes and one modulo, instead of a Python loop over ten words.


def ipv4_header_ok(header: bytes) -> bool:
    """What ``verify_checksum(..., csum16)`` says of a 20-byte IPv4 header.

    csum16 over the header without its checksum field must equal the field: the whole header
    sums to zero modulo 0xFFFF, and the field is not 0xFFFF (which csum16 never yields).
    """
    n = int.from_bytes(header, "big")
    return n % 0xFFFF == 0 and header[IP_CSUM : IP_CSUM + 2] != b"\xff\xff"


def ipv4_checksum(header: bytes | bytearray, old: int) -> int:
    """csum16 of a 20-byte IPv4 header whose checksum field currently holds ``old``."""
    return (old - int.from_bytes(header, "big")) % 0xFFFF


def ipv4_checksum_adjust(checksum: int, delta: int) -> int:
    """csum16 of a header whose checksum ``checksum`` verified, after some of its words changed.

    ``delta`` is the sum of (new - old) over the changed fields, each weighted by its position
    in its 16-bit word (a 32-bit field counts as its value, the TTL as ``ttl << 8``). Because
    the verified header summed to zero modulo 0xFFFF, the result equals a full recomputation.
    """
    return (checksum - delta) % 0xFFFF


def ipv4_checksum_after_ttl_decrement(checksum: int, ttl: int, proto: int) -> int:
    """RFC 1624 eqn. 3 for the (ttl, protocol) word when ttl becomes ``ttl - 1`` (mod 256).

    The P4 program does exactly this arithmetic for headers it cannot recompute (IHL > 5: the
    options are not parsed), so that a correct checksum stays correct and a wrong one stays
    wrong.
    """
    old_word = (ttl << 8) | proto
    new_word = (((ttl - 1) & 0xFF) << 8) | proto
    s = (checksum ^ 0xFFFF) + (old_word ^ 0xFFFF) + new_word
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF
