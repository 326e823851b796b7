"""Key -> slot, exactly as Redis Cluster's ``CLUSTER KEYSLOT``."""

from __future__ import annotations

from binascii import crc_hqx

from netmigrate.protocol.constants import SLOT_COUNT


def crc16_xmodem(data: bytes) -> int:
    """CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.

    ``binascii.crc_hqx`` is exactly this CRC (the one BinHex 4 uses), implemented in C: the
    agent hashes every key of every request, so a Python loop here would cost more than the
    rest of the request's parsing.
    """
    return crc_hqx(data, 0)


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: the first non-empty ``{...}`` section, else all."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes | str) -> int:
    if isinstance(key, str):
        key = key.encode()
    return crc_hqx(hash_tag(key), 0) % SLOT_COUNT
