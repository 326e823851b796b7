"""Codec: every request and reply round-trips; everything else is rejected, cleanly."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmigrate.protocol import codec
from netmigrate.protocol.codec import (
    Command,
    Control,
    CountReply,
    Delete,
    Empty,
    ErrorReply,
    Get,
    Header,
    IncrBy,
    IntReply,
    Message,
    MGet,
    MGetReply,
    MSet,
    ProtocolError,
    RespReply,
    Set,
    SetReply,
    ValueReply,
    decode,
    decode_fields,
    decode_header,
    encode,
    encode_body,
    encode_reply,
    encode_request,
    reply_to_malformed,
)
from netmigrate.protocol.constants import (
    F_FLAGS,
    F_KEYSPACE,
    F_OP,
    F_REQUEST_ID,
    F_SLOT,
    F_SOURCE_ID,
    F_STATUS,
    F_TARGET_ID,
    F_VERSION,
    HEADER,
    HEADER_LEN,
    MAX_SERVER_ID,
    REPLY_BIT,
    SLOT_COUNT,
    VERSION,
    Flag,
    Op,
    SetCondition,
    Status,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.binary(max_size=40)
values = st.binary(max_size=300)
epochs = st.builds(Control, st.integers(0, 2**32 - 1))
u16 = st.integers(0, 0xFFFF)
flags = st.sampled_from([0, *(int(f) for f in Flag if f), int(Flag.DOUBLE_READ | Flag.TO_TARGET)])


@st.composite
def headers(draw: st.DrawFn, op: int, status: int = Status.OK) -> Header:
    return Header(
        op=op,
        request_id=draw(st.integers(0, 2**64 - 1)),
        keyspace=draw(u16),
        slot=draw(st.integers(0, SLOT_COUNT - 1)),
        flags=draw(flags),
        status=status,
        source_id=draw(st.integers(0, MAX_SERVER_ID)),
        target_id=draw(st.integers(0, MAX_SERVER_ID)),
    )


REQUEST_BODIES = {
    Op.GET: st.builds(Get, keys),
    Op.DEL: st.builds(Delete, keys),
    Op.SET: st.builds(
        Set,
        keys,
        values,
        st.integers(0, 2**62 - 1),
        st.sampled_from(list(SetCondition)),
    ),
    Op.INCRBY: st.builds(IncrBy, keys, st.integers(-(2**63), 2**63 - 1)),
    Op.MGET: st.builds(MGet, st.lists(keys, min_size=1, max_size=8).map(tuple)),
    Op.MSET: st.builds(MSet, st.lists(st.tuples(keys, values), min_size=1, max_size=8).map(tuple)),
    Op.CMD_READ: st.builds(
        Command,
        st.lists(st.lists(values, min_size=1, max_size=5).map(tuple), min_size=1, max_size=1).map(
            tuple
        ),
        st.sampled_from([2, 3]),
    ),
    Op.CMD_WRITE: st.builds(
        Command,
        st.lists(st.lists(values, min_size=1, max_size=5).map(tuple), min_size=1, max_size=4).map(
            tuple
        ),
        st.sampled_from([2, 3]),
        st.just(True),
    ),
    Op.SLOT_START: epochs,
    Op.SLOT_COMPLETE: epochs,
    Op.SLOT_SET: epochs,
    Op.SLOT_READ: epochs,
}
OK_REPLY_BODIES = {
    Op.GET: st.builds(ValueReply, values),
    Op.SET: st.builds(SetReply, st.booleans()),
    Op.DEL: st.builds(CountReply, st.integers(0, 2**32 - 1)),
    Op.INCRBY: st.builds(IntReply, st.integers(-(2**63), 2**63 - 1)),
    Op.MGET: st.builds(MGetReply, st.lists(st.none() | values, min_size=1, max_size=8).map(tuple)),
    Op.MSET: st.just(Empty()),
    Op.CMD_READ: st.builds(RespReply, values),
    Op.CMD_WRITE: st.builds(RespReply, values),
    Op.SLOT_START: epochs,
    Op.SLOT_COMPLETE: epochs,
    Op.SLOT_SET: epochs,
    Op.SLOT_READ: epochs,
}
assert set(REQUEST_BODIES) == set(Op) == set(OK_REPLY_BODIES)


@st.composite
def requests(draw: st.DrawFn) -> Message:
    op = draw(st.sampled_from(list(Op)))
    return Message(draw(headers(int(op))), draw(REQUEST_BODIES[op]))


@st.composite
def replies(draw: st.DrawFn) -> Message:
    op = draw(st.sampled_from(list(Op)))
    status = draw(st.sampled_from(list(Status)))
    header = draw(headers(int(op) | REPLY_BIT, int(status)))
    if status == Status.OK:
        body = draw(OK_REPLY_BODIES[op])
    elif status == Status.NOT_FOUND and op == Op.GET:
        body = ValueReply(None)
    else:
        body = ErrorReply(draw(st.text(max_size=60)))
    return Message(header, body)


messages = requests() | replies()


# --- round trips --------------------------------------------------------------------------


@FAST
@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    data = encode(msg.header, msg.body)
    assert decode(data) == msg
    fields, body = decode_fields(data)
    assert Header.from_fields(fields) == msg.header
    assert body == msg.body
    assert decode_header(data) == msg.header


EXAMPLES = {
    Op.GET: (Get(b"k"), ValueReply(b"v")),
    Op.SET: (Set(b"k", b"v", 1500, SetCondition.XX), SetReply(False)),
    Op.DEL: (Delete(b"k"), CountReply(1)),
    Op.INCRBY: (IncrBy(b"k", -3), IntReply(-2)),
    Op.MGET: (MGet((b"a", b"b")), MGetReply((b"1", None))),
    Op.MSET: (MSet(((b"a", b"1"), (b"b", b""))), Empty()),
    Op.CMD_READ: (Command.of(b"HGET", b"h", b"f"), RespReply(b"$1\r\nv\r\n")),
    Op.CMD_WRITE: (
        Command(((b"HSET", b"h", b"f", b"v"), (b"EXPIRE", b"h", b"9")), 3, True),
        RespReply(b"*2\r\n:1\r\n:1\r\n"),
    ),
    Op.SLOT_START: (Control(7), Control(7)),
    Op.SLOT_COMPLETE: (Control(7), Control(7)),
    Op.SLOT_SET: (Control(0), Control(3)),
    Op.SLOT_READ: (Control(0), Control(2**32 - 1)),
}


def test_generic_commands_refuse_what_redis_could_not_run() -> None:
    header = Header(op=Op.CMD_WRITE, request_id=7, slot=1, keyspace=50000)
    good = encode(header, Command.of(b"SET", b"k", b"v"))
    with pytest.raises(ProtocolError, match="unknown RESP version 4"):
        decode(good[:HEADER_LEN] + b"\x04" + good[HEADER_LEN + 1 :])
    with pytest.raises(ProtocolError, match="unknown command flags"):
        decode(good[: HEADER_LEN + 1] + b"\x02" + good[HEADER_LEN + 2 :])
    # Several commands without the transaction flag: a pipeline batch, replies one after another.
    two = encode(header, Command(((b"PING",), (b"PING",)), 2, True))
    batch = decode(two[: HEADER_LEN + 1] + b"\x00" + two[HEADER_LEN + 2 :])
    assert batch.body == Command(((b"PING",), (b"PING",)))
    with pytest.raises(ProtocolError, match="item count must be at least 1"):
        decode(good[: HEADER_LEN + 2] + b"\x00\x00")


@pytest.mark.parametrize("op", list(Op))
def test_each_op_has_a_request_and_an_ok_reply(op: Op) -> None:
    request, reply = EXAMPLES[op]
    header = Header(op=op, request_id=7, slot=1, keyspace=50000)
    assert decode(encode(header, request)) == Message(header, request)
    assert decode(encode(header.reply(), reply)) == Message(header.reply(), reply)


@FAST
@given(requests())
def test_fast_request_encoder_equals_encode(msg: Message) -> None:
    h = msg.header
    if h.source_id or h.target_id:
        h = Header(h.op, h.request_id, h.keyspace, h.slot, h.flags)
    fast = encode_request(h.op, h.request_id, h.keyspace, h.slot, msg.body, flags=h.flags)
    assert fast == encode(h, msg.body)


@FAST
@given(requests(), st.sampled_from(list(Status)), st.text(max_size=20))
def test_fast_reply_encoder_equals_encode(msg: Message, status: Status, text: str) -> None:
    if status == Status.OK or (status == Status.NOT_FOUND and msg.header.op == Op.GET):
        status = Status.ERROR  # statuses whose reply body is an error message
    body = ErrorReply(text)
    expected = encode(msg.header.reply(status), body)
    assert encode_reply(msg.header.fields, status, body) == expected
    reply = decode(expected).header
    assert reply.is_reply and reply.request_op == msg.header.op
    assert (reply.request_id, reply.flags, reply.slot) == (
        msg.header.request_id,
        msg.header.flags,
        msg.header.slot,
    )


def test_field_indexes_follow_the_header_layout() -> None:
    h = Header(op=2, request_id=11, keyspace=3, slot=4, flags=1, status=0, source_id=5, target_id=6)
    fields = HEADER.unpack(h.pack())
    assert fields == h.fields
    named = {
        F_VERSION: VERSION,
        F_OP: 2,
        F_FLAGS: 1,
        F_STATUS: 0,
        F_KEYSPACE: 3,
        F_SLOT: 4,
        F_SOURCE_ID: 5,
        F_TARGET_ID: 6,
        F_REQUEST_ID: 11,
    }
    assert {i: fields[i] for i in named} == named


# --- strict rejection --------------------------------------------------------------------


@FAST
@given(messages, st.data())
def test_every_truncation_is_rejected_with_the_header(msg: Message, data: st.DataObject) -> None:
    raw = encode(msg.header, msg.body)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ProtocolError) as err:
        decode(raw[:cut])
    # Once the fixed header is complete the error names it, so BAD_REQUEST can be answered.
    assert (err.value.header == msg.header) == (cut >= HEADER_LEN)
    if cut < HEADER_LEN:
        assert err.value.header is None


@FAST
@given(messages, st.binary(min_size=1, max_size=10))
def test_trailing_bytes_are_rejected(msg: Message, extra: bytes) -> None:
    with pytest.raises(ProtocolError, match="trailing") as err:
        decode(encode(msg.header, msg.body) + extra)
    assert err.value.header == msg.header


BAD_HEADERS = [
    ("version", {"version": VERSION + 1}, "version"),
    ("op", {"op": 0x7F}, "unknown op"),
    ("reply of unknown op", {"op": 0x7F | REPLY_BIT}, "unknown op"),
    ("flags", {"flags": 0x80}, "flag"),
    ("status", {"status": 200}, "status"),
    ("request with a status", {"status": Status.ERROR}, "status OK"),
    ("slot", {"slot": SLOT_COUNT}, "slot"),
    ("source id", {"source_id": 255}, "reserved"),
    ("target id", {"target_id": 255}, "reserved"),
]


@pytest.mark.parametrize(
    ("name", "change", "message"), BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS]
)
def test_bad_header_fields_are_rejected(name: str, change: dict, message: str) -> None:
    fields = {"op": Op.GET, "request_id": 99, "slot": 5, **change}
    header = Header(**fields)
    raw = header.pack() + encode_body(Get(b"k"))
    with pytest.raises(ProtocolError, match=message) as err:
        decode(raw)
    assert err.value.header == header
    with pytest.raises(ProtocolError):
        decode_header(raw)


BAD_BODIES = [
    ("set condition", Op.SET, b"\x03" + bytes(8) + b"\x00\x01k" + bytes(4), "condition"),
    ("ttl", Op.SET, b"\x00" + (1 << 62).to_bytes(8, "big") + b"\x00\x01k" + bytes(4), "ttl"),
    ("zero keys", Op.MGET, b"\x00\x00", "at least 1"),
    ("zero items", Op.MSET, b"\x00\x00", "at least 1"),
    ("key longer than datagram", Op.GET, b"\x00\x05ab", "truncated key"),
    ("value longer than datagram", Op.SET, bytes(9) + b"\x00\x01k\x00\x00\x00\x09v", "value"),
]


@pytest.mark.parametrize(
    ("name", "op", "body", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_request_bodies_are_rejected(name: str, op: Op, body: bytes, message: str) -> None:
    header = Header(op=op, request_id=5)
    with pytest.raises(ProtocolError, match=message) as err:
        decode(header.pack() + body)
    assert err.value.header == header


@pytest.mark.parametrize(
    ("op", "body", "message"),
    [
        (Op.SET, b"\x02", "applied"),
        (Op.MGET, b"\x00\x01\x02", "presence"),
        (Op.GET, b"\x00\x00\x00\x05ab", "truncated value"),
    ],
)
def test_bad_reply_bodies_are_rejected(op: Op, body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(Header(op=op | REPLY_BIT).pack() + body)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_protocol_error(raw: bytes) -> None:
    try:
        msg = decode(raw)
    except ProtocolError:
        return
    assert encode(msg.header, msg.body) == raw  # whatever decodes is canonical


@settings(max_examples=400, deadline=None)
@given(messages, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_mutated_datagrams_decode_canonically_or_fail_cleanly(
    msg: Message, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(encode(msg.header, msg.body))
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    try:
        decoded = decode(bytes(raw))
    except ProtocolError:
        return
    assert encode(decoded.header, decoded.body) == bytes(raw)


# --- encoder limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        Get(b"k" * 0x10000),
        MGet(()),
        MGet((b"k",) * 0x10000),
        MSet(()),
        Set(b"k", b"v", ttl_ms=-1),
        Set(b"k", b"v", ttl_ms=1 << 62),
    ],
    ids=["key too long", "no keys", "too many keys", "no items", "negative ttl", "huge ttl"],
)
def test_encoder_refuses_what_the_decoder_would_reject(body: object) -> None:
    with pytest.raises(ValueError):
        encode_body(body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "error"),
    [(b"\xff\xfe", "UTF-8"), (b"x" * 1025, "exceeds")],
    ids=["not utf-8", "too long"],
)
def test_error_messages_must_be_what_the_encoder_writes(message: bytes, error: str) -> None:
    raw = Header(op=Op.GET | REPLY_BIT, status=Status.ERROR).pack()
    with pytest.raises(ProtocolError, match=error):
        decode(raw + len(message).to_bytes(2, "big") + message)


def test_encoder_refuses_non_bodies() -> None:
    with pytest.raises(TypeError):
        encode_body("GET k")  # type: ignore[arg-type]


def test_long_error_messages_are_cut_on_a_character_boundary() -> None:
    message = "é" * 700  # 1400 bytes of UTF-8: the limit (1024) falls inside a character
    raw = encode(Header(op=Op.GET | REPLY_BIT, status=Status.ERROR), ErrorReply(message))
    decoded = decode(raw).body
    assert isinstance(decoded, ErrorReply)
    assert decoded.message == "é" * 512
    assert codec._MAX_MESSAGE == 1024


# --- answering malformed requests --------------------------------------------------------


def _error_for(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        decode(raw)
    return err.value


def test_malformed_request_gets_a_decodable_bad_request() -> None:
    # Every header field broken at once, except the op: the answer still decodes.
    bad = Header(
        op=Op.SET,
        request_id=1234,
        keyspace=7,
        slot=60000,
        flags=0xFF,
        status=77,
        source_id=255,
        target_id=255,
        version=9,
    )
    answer = reply_to_malformed(_error_for(bad.pack() + b"junk"))
    assert answer is not None
    msg = decode(answer)
    assert msg.header == Header(
        op=Op.SET | REPLY_BIT,
        request_id=1234,
        keyspace=7,
        slot=0,
        flags=int(Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY),
        status=Status.BAD_REQUEST,
    )
    assert isinstance(msg.body, ErrorReply) and "version" in msg.body.message


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x02",  # no header
        Header(op=0x7E, request_id=1).pack(),  # unknown op: its reply could not be decoded
        Header(op=Op.GET | REPLY_BIT).pack() + b"\x00",  # a reply: never answered
    ],
    ids=["short", "unknown op", "reply"],
)
def test_malformed_datagrams_that_get_no_answer(raw: bytes) -> None:
    assert reply_to_malformed(_error_for(raw)) is None


def test_control_ops_carry_a_fixed_epoch() -> None:
    # The switch parses the epoch as a fixed header right after nm: exactly CONTROL_LEN bytes.
    header = Header(op=Op.SLOT_START, request_id=1, slot=5, keyspace=1, source_id=1, target_id=2)
    datagram = encode(header, Control(0x01020304))
    assert datagram[HEADER_LEN:] == b"\x01\x02\x03\x04"
    with pytest.raises(ProtocolError):
        decode(datagram[:-1])  # a transition without its whole epoch
    with pytest.raises(ProtocolError):
        decode(datagram + b"\x00")
    with pytest.raises(ValueError):
        Control(2**32)
    with pytest.raises(ValueError):
        Control(-1)
