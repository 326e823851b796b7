"""P4Runtime binary strings (spec section "Bytestrings"), as the lab switch reads and writes them.

Received values may be of any length as long as the number fits the P4Info bit width (a
client that pads to whole bytes and one that sends the shortest string are both right);
values the switch sends are always the canonical shortest string, for read-write symmetry.

An empty string or a value wider than the field is answered with INVALID_ARGUMENT, as BMv2's
P4Runtime server (PI) does (the specification would say OUT_OF_RANGE; we follow the reference
target so that clients see the same code on both).
"""

from __future__ import annotations

from netmigrate.switch.errors import invalid


def decode_uint(data: bytes, bitwidth: int, what: str) -> int:
    """The unsigned value of ``data``; rejects empty strings and values wider than ``bitwidth``."""
    if not data:
        raise invalid(f"{what}: empty bytestring")
    value = int.from_bytes(data, "big")
    if value >> bitwidth:
        raise invalid(f"{what}: value 0x{data.hex()} does not fit within {bitwidth} bits")
    return value


def encode_uint(value: int) -> bytes:
    """The canonical (shortest, at least one byte) big-endian string of ``value``."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def encode_width(value: int, bitwidth: int) -> bytes:
    """``value`` padded to the whole bytes of ``bitwidth`` (for wire headers, not P4Runtime)."""
    return value.to_bytes((bitwidth + 7) // 8, "big")
