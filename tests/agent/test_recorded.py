"""Reading request id records by slot (the request-id handover, #12.3): the slot is read from
the header in place for every record kind, and only writes of the wanted slots come out, with
their reply datagram and fingerprint."""

from __future__ import annotations

from netmigrate.agent.dedup import datagram_record, fingerprint, record_slot
from netmigrate.agent.recorded import writes_of_slots
from netmigrate.protocol.codec import Get, IncrBy, IntReply, decode, encode_reply, encode_request
from netmigrate.protocol.constants import HEADER_LEN, Op, Status

RID = (3 << 32) | 9


def int_record(slot: int, rid: int = RID) -> tuple[bytes, bytes]:
    request = encode_request(Op.INCRBY, rid, 50000, slot, IncrBy(b"k", 2))
    return b"I" + request[:HEADER_LEN] + fingerprint(request) + b"2", request


def test_record_slot_reads_every_kind() -> None:
    record, request = int_record(77)
    assert record_slot(record) == 77
    reply = encode_reply(decode(request).header.fields, Status.OK, IntReply(2))
    assert record_slot(datagram_record(reply, fingerprint(request))) == 77
    assert record_slot(datagram_record(reply)) == 77
    assert record_slot(b"Zjunk") is None and record_slot(b"I") is None


def test_writes_of_slots_picks_the_wanted_slots_writes() -> None:
    wanted, _ = int_record(5)
    other, _ = int_record(6, RID + 1)
    read = encode_request(Op.GET, RID + 2, 50000, 5, Get(b"k"))
    not_a_write = b"B" + read[:HEADER_LEN] + fingerprint(read) + b"v"
    found = writes_of_slots([wanted, other, not_a_write, b"Zjunk"], [5])
    assert list(found) == [5]
    (w,) = found[5]
    assert (w.request_id, w.slot) == (RID, 5)
    assert decode(w.reply).body == IntReply(2) and decode(w.reply).header.status == Status.OK
    assert w.fingerprint == fingerprint(encode_request(Op.INCRBY, RID, 50000, 5, IncrBy(b"k", 2)))
