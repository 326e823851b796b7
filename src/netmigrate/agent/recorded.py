"""What a request id record in Redis stands for: the reply datagram of the write it records,
and the records of some slots (what a migration source hands its target, D16).

The data path answers a retry from a record, and the source side builds the request-id
handover from them: one conversion for both, so that a handed-over answer is byte for byte the
one the client would have got from the source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netmigrate.agent.commands import OPS
from netmigrate.agent.dedup import (
    RecordError,
    decode_record,
    record_fingerprint,
    record_slot,
)
from netmigrate.protocol.codec import HeaderFields, encode_body, pack_reply_header
from netmigrate.protocol.constants import F_OP, F_REQUEST_ID, F_SLOT, HEADER, REPLY_BIT, WRITE_OPS

_WRITE_OPS = frozenset(int(op) for op in WRITE_OPS)


def recorded_reply(fields: HeaderFields, answer: Any) -> bytes:
    """The reply datagram a recorded write was answered with (the same bytes)."""
    spec = OPS.get(fields[F_OP])
    if spec is None or spec.read_only:
        raise RecordError(f"record of op 0x{fields[F_OP]:02x}, which is not a write")
    status, body = spec.reply(answer)
    return pack_reply_header(fields, status) + encode_body(body)


def reply_of_record(record: bytes) -> bytes:
    """The reply datagram a request id record stands for (raises if it is unreadable)."""
    decoded = decode_record(record)
    return decoded if isinstance(decoded, bytes) else recorded_reply(*decoded)


@dataclass(frozen=True)
class RecordedWrite:
    """A write Redis has a record of: what a retry of it must be answered with."""

    request_id: int
    slot: int
    reply: bytes
    #: None for a record without one (any request with the id matches).
    fingerprint: bytes | None


def writes_of_slots(
    records: Iterable[bytes], slots: Iterable[int]
) -> dict[int, list[RecordedWrite]]:
    """The recorded writes of ``slots`` among ``records``, per slot (every slot a key).
    Unreadable records are not this agent's (or from a newer one) and are left out."""
    out: dict[int, list[RecordedWrite]] = {s: [] for s in slots}
    for record in records:
        if record_slot(record) not in out:
            continue
        write = recorded_write(record)
        if write is None:
            continue
        found = out.get(write.slot)
        if found is not None:
            found.append(write)
    return out


def recorded_write(record: bytes) -> RecordedWrite | None:
    """The write a record stands for; None for a record that is unreadable (not this
    agent's, or from a newer one) or not of a write."""
    try:
        reply = reply_of_record(record)
        fields = HEADER.unpack_from(reply)
        fp = record_fingerprint(record)
    except (RecordError, ValueError, TypeError):
        return None
    if fields[F_OP] & ~REPLY_BIT not in _WRITE_OPS:
        return None
    return RecordedWrite(fields[F_REQUEST_ID], fields[F_SLOT], reply, fp)
