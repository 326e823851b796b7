"""``HOST:PORT`` as users write it on command lines and in inventories, parsed once for all."""

from __future__ import annotations


class AddressError(ValueError):
    """A malformed address; the message names the option and what is wrong."""


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 means any free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{what}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise AddressError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= number <= 0xFFFF:
        raise AddressError(f"{what}: port {number} out of range")
    return host, number
