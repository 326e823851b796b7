"""Wire layouts of the NetMigrate header and of the P4 controller headers.

The NetMigrate header layout is derived from :data:`netmigrate.protocol.constants.HEADER` (its
field widths) and :data:`NM_FIELD_NAMES` (its field names, as in ``p4/include``): the P4
program's ``nm_t`` is generated from the same two (``netmigrate gen-p4-constants``), and the lab
switch's pipeline and the scapy layer read them too, so the layout is spelled once. The
``packet_in`` / ``packet_out`` headers are those of the P4 program's CPU port (its P4Info
``controller_packet_metadata``).
"""

from __future__ import annotations

import struct

from netmigrate.protocol.constants import CONTROL, CONTROL_LEN, HEADER, HEADER_LEN

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


#: Wire order of the control body's fields (``nm_control_t``); widths come from CONTROL.
NM_CONTROL_FIELD_NAMES = ("epoch",)


def _layout(
    fmt: struct.Struct, names: tuple[str, ...], length: int
) -> tuple[tuple[str, int, int], ...]:
    """(name, byte offset, bit width) per field, from a struct's format."""
    codes = fmt.format.lstrip("!<>=@")
    if len(codes) != len(names):
        raise RuntimeError(f"{fmt.format!r} does not match {names}")
    out = []
    offset = 0
    for name, code in zip(names, codes, strict=True):
        size = struct.calcsize("!" + code)
        out.append((name, offset, size * 8))
        offset += size
    if offset != length:
        raise RuntimeError(f"layout of {names} does not add up to {length} bytes")
    return tuple(out)


#: (name, byte offset, bit width) of every NetMigrate header field, in wire order.
NM_LAYOUT = _layout(HEADER, NM_FIELD_NAMES, HEADER_LEN)
#: Likewise for the control body that follows the header of a control op (offsets from its
#: start, i.e. from the end of the NetMigrate header).
NM_CONTROL_LAYOUT = _layout(CONTROL, NM_CONTROL_FIELD_NAMES, CONTROL_LEN)
NM_CONTROL_EPOCH = {name: off for name, off, _ in NM_CONTROL_LAYOUT}["epoch"]
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
