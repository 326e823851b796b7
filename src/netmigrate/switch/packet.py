"""Header layouts and byte-level helpers of the lab switch's pipeline.

The pipeline (:mod:`netmigrate.switch.pipeline`) works on raw frames with
``struct.unpack_from`` / ``int.from_bytes`` at fixed offsets; this module holds those offsets,
the controller headers (``packet_in`` / ``packet_out``) and the IPv4 checksum arithmetic, so
that no packet path builds objects per header.

The NetMigrate header layout is derived from :data:`netmigrate.protocol.constants.HEADER`
(its field widths) and :data:`NM_FIELD_NAMES` (its field names, as in ``p4/include``): the P4
program's ``nm_t`` is generated from the same two (``netmigrate gen-p4-constants``) and the
scapy layer reads them too, so the layout is spelled once.
"""

from __future__ import annotations

import struct

from netmigrate.protocol.constants import HEADER, HEADER_LEN

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

# --- The NetMigrate header ----------------------------------------------------------------------

#: Wire order of the NetMigrate header's fields (DESIGN.md section 4); widths come from HEADER.
NM_FIELD_NAMES = (
    "version",
    "op",
    "flags",
    "status",
    "keyspace",
    "slot",
    "source_id",
    "target_id",
    "request_id",
)


def _nm_layout() -> tuple[tuple[str, int, int], ...]:
    """(name, byte offset, bit width) per field, from HEADER's struct format."""
    codes = HEADER.format.lstrip("!<>=@")
    if len(codes) != len(NM_FIELD_NAMES):
        raise RuntimeError(f"HEADER {HEADER.format!r} does not match {NM_FIELD_NAMES}")
    out = []
    offset = 0
    for name, code in zip(NM_FIELD_NAMES, codes, strict=True):
        size = struct.calcsize("!" + code)
        out.append((name, offset, size * 8))
        offset += size
    if offset != HEADER_LEN:
        raise RuntimeError("NetMigrate header layout does not add up to HEADER_LEN")
    return tuple(out)


#: (name, byte offset, bit width) of every NetMigrate header field, in wire order.
NM_LAYOUT = _nm_layout()
_NM_OFFSET = {name: off for name, off, _ in NM_LAYOUT}
NM_OP = _NM_OFFSET["op"]
NM_FLAGS = _NM_OFFSET["flags"]
NM_SLOT = _NM_OFFSET["slot"]
NM_SOURCE_ID = _NM_OFFSET["source_id"]
NM_TARGET_ID = _NM_OFFSET["target_id"]

# --- Controller headers -------------------------------------------------------------------------

#: ``packet_out``: egress_port:9, submit_to_ingress:1, _pad:6 -- two bytes in front of the frame.
PACKET_OUT_LEN = 2
#: ``packet_in``: ingress_port:9, reason:7 -- two bytes in front of the frame.
PACKET_IN_LEN = 2
PACKET_OUT_FIELDS = (("egress_port", 9), ("submit_to_ingress", 1), ("_pad", 6))
PACKET_IN_FIELDS = (("ingress_port", 9), ("reason", 7))


def decode_packet_out(header: bytes) -> tuple[int, int, int]:
    """(egress_port, submit_to_ingress, _pad) of a two-byte ``packet_out`` header."""
    if len(header) < PACKET_OUT_LEN:
        raise ValueError(f"packet_out header needs {PACKET_OUT_LEN} bytes, got {len(header)}")
    v = (header[0] << 8) | header[1]
    return v >> 7, (v >> 6) & 1, v & 0x3F


def encode_packet_out(egress_port: int, submit_to_ingress: int = 0, pad: int = 0) -> bytes:
    if not 0 <= egress_port < 1 << 9 or submit_to_ingress not in (0, 1) or not 0 <= pad < 64:
        raise ValueError("packet_out field out of range")
    return ((egress_port << 7) | (submit_to_ingress << 6) | pad).to_bytes(2, "big")


def decode_packet_in(header: bytes) -> tuple[int, int]:
    """(ingress_port, reason) of a two-byte ``packet_in`` header."""
    if len(header) < PACKET_IN_LEN:
        raise ValueError(f"packet_in header needs {PACKET_IN_LEN} bytes, got {len(header)}")
    v = (header[0] << 8) | header[1]
    return v >> 7, v & 0x7F


def encode_packet_in(ingress_port: int, reason: int) -> bytes:
    if not 0 <= ingress_port < 1 << 9 or not 0 <= reason < 1 << 7:
        raise ValueError("packet_in field out of range")
    return ((ingress_port << 7) | reason).to_bytes(2, "big")


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
