"""Encode and strictly decode NetMigrate datagrams.

A datagram is the fixed header (:data:`~netmigrate.protocol.constants.HEADER`) followed by an
op-specific payload of length-prefixed keys (u16) and values (u32). Decoding checks every
length and field and raises :class:`ProtocolError` on anything else: no partial results.

Two levels of API:

- :func:`encode` / :func:`decode` work with :class:`Header` and :class:`Message` records;
- :func:`encode_request`, :func:`decode_fields` and :func:`encode_reply` are the same codec for
  hot paths (agent, client): they hand the header around as the raw ``HEADER`` tuple (indexed
  with the ``F_*`` constants) because building a frozen dataclass per datagram costs more than
  the whole rest of the decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netmigrate.protocol.constants import (
    CONTROL,
    CONTROL_LEN,
    COUNT,
    HEADER,
    HEADER_LEN,
    I64,
    KEY_LEN,
    MAX_EPOCH,
    MAX_SERVER_ID,
    NO_EPOCH,
    REPLY_BIT,
    RESP_VERSIONS,
    SLOT_COUNT,
    U8,
    U32,
    U64,
    VALUE_LEN,
    VERSION,
    Flag,
    Op,
    SetCondition,
    Status,
)

_MAX_KEY = 0xFFFF
_MAX_COUNT = 0xFFFF
#: TTLs at or above this are rejected: Redis keeps expiry times as signed 64-bit milliseconds.
_MAX_TTL_MS = 1 << 62
#: Longest error message on the wire (bytes of UTF-8).
_MAX_MESSAGE = 1024
_KNOWN_FLAGS = int(Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY)
_UNKNOWN_FLAGS = 0xFF & ~_KNOWN_FLAGS
_OPS = frozenset(int(op) for op in Op)
_STATUSES = frozenset(int(s) for s in Status)
_OK = int(Status.OK)
#: Command flags byte of CMD_READ / CMD_WRITE: the commands run as one MULTI/EXEC.
_TRANSACTION = 0x01
_NOT_FOUND = int(Status.NOT_FOUND)

#: The header as ``HEADER.unpack`` returns it:
#: (version, op, flags, status, keyspace, slot, source_id, target_id, request_id).
HeaderFields = tuple[int, int, int, int, int, int, int, int, int]


class ProtocolError(ValueError):
    """A datagram that is not valid NetMigrate.

    ``header`` is set when the fixed header itself was valid, so that the receiver can still
    answer BAD_REQUEST to the request id it names.
    """

    def __init__(self, message: str, header: Header | None = None) -> None:
        super().__init__(message)
        self.header = header


@dataclass(frozen=True, slots=True)
class Header:
    op: int
    request_id: int = 0
    keyspace: int = 0
    slot: int = 0
    flags: int = 0
    status: int = Status.OK
    source_id: int = 0
    target_id: int = 0
    version: int = VERSION

    @classmethod
    def from_fields(cls, fields: HeaderFields) -> Header:
        version, op, flags, status, keyspace, slot, source_id, target_id, request_id = fields
        return cls(op, request_id, keyspace, slot, flags, status, source_id, target_id, version)

    @property
    def fields(self) -> HeaderFields:
        return (
            self.version,
            self.op,
            self.flags,
            self.status,
            self.keyspace,
            self.slot,
            self.source_id,
            self.target_id,
            self.request_id,
        )

    @property
    def is_reply(self) -> bool:
        return bool(self.op & REPLY_BIT)

    @property
    def request_op(self) -> Op:
        return Op(self.op & ~REPLY_BIT)

    def pack(self) -> bytes:
        return HEADER.pack(*self.fields)

    def reply(self, status: Status = Status.OK) -> Header:
        """The header of the reply to this request: same ids and flags, reply bit set."""
        return Header(
            self.op | REPLY_BIT,
            self.request_id,
            self.keyspace,
            self.slot,
            self.flags,
            int(status),
            self.source_id,
            self.target_id,
            self.version,
        )


# ---------------------------------------------------------------------------------------------
# Bodies. Requests and replies are plain frozen records; ``encode`` and ``decode`` map them to
# and from bytes.


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class Set:
    key: bytes
    value: bytes
    ttl_ms: int = 0  # 0: no expiry
    condition: SetCondition = SetCondition.ALWAYS


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes


@dataclass(frozen=True, slots=True)
class IncrBy:
    key: bytes
    delta: int


@dataclass(frozen=True, slots=True)
class MGet:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MSet:
    items: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Command:
    """Body of CMD_READ / CMD_WRITE: Redis commands (each its name, then its arguments) on keys
    of one slot. With ``transaction`` they run atomically as MULTI/EXEC does (the reply is EXEC's
    array); without it they are a pipeline of one connection (one command, or several batched
    by a client: they run in order and the reply is their replies one after another). ``resp``
    is the RESP version the reply is written in: the client's (a reply has another shape in
    RESP3, so it runs on a connection of that version)."""

    commands: tuple[tuple[bytes, ...], ...]
    resp: int = 2
    transaction: bool = False

    @classmethod
    def of(cls, *args: bytes, resp: int = 2) -> Command:
        return cls((tuple(args),), resp)


@dataclass(frozen=True, slots=True)
class RespReply:
    """OK reply of CMD_READ / CMD_WRITE: Redis' own reply to the command, as RESP bytes. An
    error of Redis (``-WRONGTYPE ...``) is such a reply too: the command ran, status OK."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Control:
    """Body of SLOT_START / SLOT_COMPLETE / SLOT_SET / SLOT_READ and of their OK replies: the
    slot's transition epoch (the rest is in the header). A transition carries its migration's
    epoch, and the switch and the agents drop one whose epoch is not the slot's current one;
    SLOT_SET raises the switch's epoch to it (never lowers it), and the switch answers SLOT_SET
    and SLOT_READ with the slot's epoch."""

    epoch: int

    def __post_init__(self) -> None:
        if not NO_EPOCH <= self.epoch <= MAX_EPOCH:
            raise ValueError(f"epoch {self.epoch} out of {NO_EPOCH}..{MAX_EPOCH}")


@dataclass(frozen=True, slots=True)
class ValueReply:
    """GET reply: ``value`` is None for NOT_FOUND."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class SetReply:
    applied: bool  # False when the NX/XX condition did not hold


@dataclass(frozen=True, slots=True)
class CountReply:
    count: int  # DEL: keys removed


@dataclass(frozen=True, slots=True)
class IntReply:
    value: int  # INCRBY: the new value


@dataclass(frozen=True, slots=True)
class MGetReply:
    values: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class Empty:
    """Reply without a body (MSET, control acknowledgements)."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Body of every reply whose status is neither OK nor (for GET) NOT_FOUND."""

    message: str = ""


Request = Get | Set | Delete | IncrBy | MGet | MSet | Command | Control
Reply = (
    ValueReply
    | SetReply
    | CountReply
    | IntReply
    | MGetReply
    | RespReply
    | Empty
    | ErrorReply
    | Control
)
Body = Request | Reply

_REQUEST_TYPES: dict[Op, type] = {
    Op.GET: Get,
    Op.SET: Set,
    Op.DEL: Delete,
    Op.INCRBY: IncrBy,
    Op.MGET: MGet,
    Op.MSET: MSet,
    Op.CMD_READ: Command,
    Op.CMD_WRITE: Command,
    Op.SLOT_START: Control,
    Op.SLOT_COMPLETE: Control,
    Op.SLOT_SET: Control,
    Op.SLOT_READ: Control,
}


@dataclass(frozen=True, slots=True)
class Message:
    header: Header
    body: Body


# ---------------------------------------------------------------------------------------------
# Encoding

_pack_key_len = KEY_LEN.pack
_pack_value_len = VALUE_LEN.pack
_pack_count = COUNT.pack


def _key(key: bytes) -> bytes:
    if len(key) > _MAX_KEY:
        raise ValueError(f"key of {len(key)} bytes exceeds {_MAX_KEY}")
    return _pack_key_len(len(key)) + key


def _value(value: bytes) -> bytes:
    return _pack_value_len(len(value)) + value


def _count(n: int) -> bytes:
    if not 1 <= n <= _MAX_COUNT:
        raise ValueError(f"item count {n} out of range 1..{_MAX_COUNT}")
    return _pack_count(n)


def _enc_set(b: Set) -> bytes:
    if not 0 <= b.ttl_ms < _MAX_TTL_MS:
        raise ValueError(f"ttl_ms must be in 0..{_MAX_TTL_MS - 1}")
    return U8.pack(int(b.condition)) + U64.pack(b.ttl_ms) + _key(b.key) + _value(b.value)


def _enc_command(b: Command) -> bytes:
    if b.resp not in RESP_VERSIONS:
        raise ValueError(f"RESP version {b.resp} is not one of {sorted(RESP_VERSIONS)}")
    out = [U8.pack(b.resp), U8.pack(_TRANSACTION if b.transaction else 0), _count(len(b.commands))]
    for args in b.commands:
        out.append(_count(len(args)))
        out.extend(_value(a) for a in args)
    return b"".join(out)


def _enc_mget_reply(b: MGetReply) -> bytes:
    out = [_count(len(b.values))]
    for v in b.values:
        out.append(b"\x00" if v is None else b"\x01" + _value(v))
    return b"".join(out)


def _enc_error(b: ErrorReply) -> bytes:
    # Cut on a character boundary so that the message decodes to a prefix of itself.
    raw = b.message.encode("utf-8")
    if len(raw) > _MAX_MESSAGE:
        raw = raw[:_MAX_MESSAGE].decode("utf-8", "ignore").encode("utf-8")
    return _pack_key_len(len(raw)) + raw


_ENCODERS: dict[type, Callable[[object], bytes]] = {
    Get: lambda b: _key(b.key),
    Delete: lambda b: _key(b.key),
    Set: _enc_set,
    IncrBy: lambda b: _key(b.key) + I64.pack(b.delta),
    MGet: lambda b: _count(len(b.keys)) + b"".join(_key(k) for k in b.keys),
    MSet: lambda b: _count(len(b.items)) + b"".join(_key(k) + _value(v) for k, v in b.items),
    Command: _enc_command,
    RespReply: lambda b: _value(b.data),
    Control: lambda b: CONTROL.pack(b.epoch),
    Empty: lambda b: b"",
    ValueReply: lambda b: b"" if b.value is None else _pack_value_len(len(b.value)) + b.value,
    SetReply: lambda b: b"\x01" if b.applied else b"\x00",
    CountReply: lambda b: U32.pack(b.count),
    IntReply: lambda b: I64.pack(b.value),
    MGetReply: _enc_mget_reply,
    ErrorReply: _enc_error,
}


def encode_body(body: Body) -> bytes:
    enc = _ENCODERS.get(type(body))
    if enc is None:
        raise TypeError(f"not a NetMigrate body: {body!r}")
    return enc(body)


def encode(header: Header, body: Body) -> bytes:
    """The datagram for ``header`` and ``body``."""
    return header.pack() + encode_body(body)


def encode_request(
    op: int, request_id: int, keyspace: int, slot: int, body: Body, flags: int = 0
) -> bytes:
    """The datagram of a data request (status OK, no server ids), without building a Header."""
    return HEADER.pack(VERSION, op, flags, _OK, keyspace, slot, 0, 0, request_id) + encode_body(
        body
    )


def pack_reply_header(request: HeaderFields, status: int) -> bytes:
    """The header of the reply to the request whose header is ``request``."""
    version, op, flags, _, keyspace, slot, source_id, target_id, request_id = request
    return HEADER.pack(
        version, op | REPLY_BIT, flags, status, keyspace, slot, source_id, target_id, request_id
    )


def encode_reply(request: HeaderFields, status: int, body: Body) -> bytes:
    """The reply datagram to the request whose header is ``request``."""
    return pack_reply_header(request, status) + encode_body(body)


# ---------------------------------------------------------------------------------------------
# Decoding. The body decoders take (data, offset) and return (body, new offset); they raise
# _BodyError, which the entry points turn into a ProtocolError carrying the parsed header (a
# Header is only built on that error path).


class _BodyError(Exception):
    pass


_key_len_from = KEY_LEN.unpack_from
_value_len_from = VALUE_LEN.unpack_from
_count_from = COUNT.unpack_from
_i64_from = I64.unpack_from
_u64_from = U64.unpack_from
_u32_from = U32.unpack_from
_control_from = CONTROL.unpack_from


def _take_key(data: bytes, pos: int) -> tuple[bytes, int]:
    start = pos + 2
    if start > len(data):
        raise _BodyError(f"truncated key length at offset {pos}")
    end = start + _key_len_from(data, pos)[0]
    if end > len(data):
        raise _BodyError(f"truncated key: need {end - start} bytes at offset {start}")
    return data[start:end], end


def _take_value(data: bytes, pos: int) -> tuple[bytes, int]:
    start = pos + 4
    if start > len(data):
        raise _BodyError(f"truncated value length at offset {pos}")
    end = start + _value_len_from(data, pos)[0]
    if end > len(data):
        raise _BodyError(f"truncated value: need {end - start} bytes at offset {start}")
    return data[start:end], end


def _take_count(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(data):
        raise _BodyError(f"truncated item count at offset {pos}")
    n = _count_from(data, pos)[0]
    if n == 0:
        raise _BodyError("item count must be at least 1")
    return n, pos + 2


def _take_fixed(data: bytes, pos: int, size: int, what: str) -> int:
    if pos + size > len(data):
        raise _BodyError(f"truncated {what} at offset {pos}")
    return pos + size


def _dec_get(data: bytes, pos: int) -> tuple[Request, int]:
    key, pos = _take_key(data, pos)
    return Get(key), pos


def _dec_delete(data: bytes, pos: int) -> tuple[Request, int]:
    key, pos = _take_key(data, pos)
    return Delete(key), pos


def _dec_set(data: bytes, pos: int) -> tuple[Request, int]:
    _take_fixed(data, pos, 9, "set condition and ttl")
    cond = data[pos]
    if cond > SetCondition.XX:
        raise _BodyError(f"unknown set condition {cond}")
    ttl_ms = _u64_from(data, pos + 1)[0]
    if ttl_ms >= _MAX_TTL_MS:
        raise _BodyError("ttl out of range")
    key, pos = _take_key(data, pos + 9)
    value, pos = _take_value(data, pos)
    return Set(key, value, ttl_ms, SetCondition(cond)), pos


def _dec_incrby(data: bytes, pos: int) -> tuple[Request, int]:
    key, pos = _take_key(data, pos)
    end = _take_fixed(data, pos, 8, "delta")
    return IncrBy(key, _i64_from(data, pos)[0]), end


def _dec_mget(data: bytes, pos: int) -> tuple[Request, int]:
    n, pos = _take_count(data, pos)
    keys = []
    for _ in range(n):
        key, pos = _take_key(data, pos)
        keys.append(key)
    return MGet(tuple(keys)), pos


def _dec_mset(data: bytes, pos: int) -> tuple[Request, int]:
    n, pos = _take_count(data, pos)
    items = []
    for _ in range(n):
        key, pos = _take_key(data, pos)
        value, pos = _take_value(data, pos)
        items.append((key, value))
    return MSet(tuple(items)), pos


def _dec_command(data: bytes, pos: int) -> tuple[Request, int]:
    _take_fixed(data, pos, 2, "RESP version and command flags")
    resp, flags = data[pos], data[pos + 1]
    if resp not in RESP_VERSIONS:
        raise _BodyError(f"unknown RESP version {resp}")
    if flags & ~_TRANSACTION:
        raise _BodyError(f"unknown command flags 0x{flags:02x}")
    n, pos = _take_count(data, pos + 2)
    commands = []
    for _ in range(n):
        argc, pos = _take_count(data, pos)
        args = []
        for _ in range(argc):
            arg, pos = _take_value(data, pos)
            args.append(arg)
        commands.append(tuple(args))
    return Command(tuple(commands), resp, bool(flags & _TRANSACTION)), pos


def _dec_resp_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    value, pos = _take_value(data, pos)
    return RespReply(value), pos


def _dec_control(data: bytes, pos: int) -> tuple[Control, int]:
    end = _take_fixed(data, pos, CONTROL_LEN, "epoch")
    return Control(_control_from(data, pos)[0]), end


_REQUEST_DECODERS: dict[int, Callable[[bytes, int], tuple[Request, int]]] = {
    Op.GET: _dec_get,
    Op.SET: _dec_set,
    Op.DEL: _dec_delete,
    Op.INCRBY: _dec_incrby,
    Op.MGET: _dec_mget,
    Op.MSET: _dec_mset,
    Op.CMD_READ: _dec_command,
    Op.CMD_WRITE: _dec_command,
    Op.SLOT_START: _dec_control,
    Op.SLOT_COMPLETE: _dec_control,
    Op.SLOT_SET: _dec_control,
    Op.SLOT_READ: _dec_control,
}


def _dec_value_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    value, pos = _take_value(data, pos)
    return ValueReply(value), pos


def _dec_set_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    end = _take_fixed(data, pos, 1, "applied")
    applied = data[pos]
    if applied > 1:
        raise _BodyError("applied flag must be 0 or 1")
    return SetReply(bool(applied)), end


def _dec_count_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    end = _take_fixed(data, pos, 4, "count")
    return CountReply(_u32_from(data, pos)[0]), end


def _dec_int_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    end = _take_fixed(data, pos, 8, "value")
    return IntReply(_i64_from(data, pos)[0]), end


def _dec_mget_reply(data: bytes, pos: int) -> tuple[Reply, int]:
    n, pos = _take_count(data, pos)
    values: list[bytes | None] = []
    for _ in range(n):
        _take_fixed(data, pos, 1, "presence")
        present = data[pos]
        pos += 1
        if present > 1:
            raise _BodyError("presence flag must be 0 or 1")
        if present:
            value, pos = _take_value(data, pos)
            values.append(value)
        else:
            values.append(None)
    return MGetReply(tuple(values)), pos


def _dec_empty(data: bytes, pos: int) -> tuple[Reply, int]:
    return Empty(), pos


_OK_REPLY_DECODERS: dict[int, Callable[[bytes, int], tuple[Reply, int]]] = {
    Op.GET: _dec_value_reply,
    Op.SET: _dec_set_reply,
    Op.DEL: _dec_count_reply,
    Op.INCRBY: _dec_int_reply,
    Op.MGET: _dec_mget_reply,
    Op.MSET: _dec_empty,
    Op.CMD_READ: _dec_resp_reply,
    Op.CMD_WRITE: _dec_resp_reply,
    Op.SLOT_START: _dec_control,
    Op.SLOT_COMPLETE: _dec_control,
    Op.SLOT_SET: _dec_control,
    Op.SLOT_READ: _dec_control,
}


#: Body decoder by wire op for datagrams with status OK: requests, and replies (op | REPLY_BIT).
_STATUS_OK_DECODERS: dict[int, Callable[[bytes, int], tuple[Body, int]]] = {
    **_REQUEST_DECODERS,
    **{op | REPLY_BIT: dec for op, dec in _OK_REPLY_DECODERS.items()},
}


def _decode_reply(data: bytes, pos: int, op: int, status: int) -> tuple[Reply, int]:
    if status == _OK:
        return _OK_REPLY_DECODERS[op](data, pos)
    if status == _NOT_FOUND and op == Op.GET:
        return ValueReply(None), pos
    start = pos + 2
    if start > len(data):
        raise _BodyError(f"truncated message length at offset {pos}")
    end = start + _key_len_from(data, pos)[0]
    if end - start > _MAX_MESSAGE:
        raise _BodyError(f"error message of {end - start} bytes exceeds {_MAX_MESSAGE}")
    if end > len(data):
        raise _BodyError(f"truncated message: need {end - start} bytes at offset {start}")
    try:
        return ErrorReply(data[start:end].decode("utf-8")), end
    except UnicodeDecodeError:
        raise _BodyError("error message is not UTF-8") from None


def _header_error(fields: HeaderFields) -> str | None:
    """Why this header is invalid, or None."""
    version, op, flags, status, _, slot, source_id, target_id, _ = fields
    if version != VERSION:
        return f"unsupported protocol version {version}"
    if op & ~REPLY_BIT not in _OPS:
        return f"unknown op 0x{op:02x}"
    if flags & ~_KNOWN_FLAGS:
        return f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x}"
    if status not in _STATUSES:
        return f"unknown status {status}"
    if not op & REPLY_BIT and status != _OK:
        return "a request must carry status OK"
    if slot >= SLOT_COUNT:
        return f"slot {slot} out of range 0..{SLOT_COUNT - 1}"
    if source_id > MAX_SERVER_ID or target_id > MAX_SERVER_ID:
        return "server id 255 is reserved"
    return None


_unpack_header_from = HEADER.unpack_from


def _unpack_header(data: bytes) -> HeaderFields:
    if len(data) < HEADER_LEN:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than the header")
    fields: HeaderFields = _unpack_header_from(data)
    error = _header_error(fields)
    if error is not None:
        raise ProtocolError(error, Header.from_fields(fields))
    return fields


def decode_header(data: bytes) -> Header:
    """Decode and validate the fixed header only (what the switch parses)."""
    return Header.from_fields(_unpack_header(data))


def decode_fields(data: bytes) -> tuple[HeaderFields, Body]:
    """Decode a whole datagram into its raw header tuple and body. Raises :class:`ProtocolError`.

    Exactly as strict as :func:`decode`; the header stays a tuple (see ``F_*`` in constants).
    """
    if len(data) < HEADER_LEN:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than the header")
    fields: HeaderFields = _unpack_header_from(data)
    version, op, flags, status, _, slot, source_id, target_id, _ = fields
    try:
        # The common cases (a request, an OK reply) in one test; everything else gets the
        # detailed check, which also names what is wrong.
        decoder = _STATUS_OK_DECODERS.get(op)
        if (
            decoder is not None
            and status == _OK
            and version == VERSION
            and not flags & _UNKNOWN_FLAGS
            and slot < SLOT_COUNT
            and source_id <= MAX_SERVER_ID
            and target_id <= MAX_SERVER_ID
        ):
            body, pos = decoder(data, HEADER_LEN)
        else:
            error = _header_error(fields)
            if error is not None:
                raise ProtocolError(error, Header.from_fields(fields))
            if op & REPLY_BIT:
                body, pos = _decode_reply(data, HEADER_LEN, op & ~REPLY_BIT, status)
            else:
                body, pos = _REQUEST_DECODERS[op](data, HEADER_LEN)
        if pos != len(data):
            raise _BodyError(f"{len(data) - pos} trailing bytes after the payload")
    except _BodyError as e:
        raise ProtocolError(str(e), Header.from_fields(fields)) from None
    return fields, body


def decode(data: bytes) -> Message:
    """Decode a whole datagram, request or reply. Raises :class:`ProtocolError`."""
    fields, body = decode_fields(data)
    return Message(Header.from_fields(fields), body)


def reply_to_malformed(error: ProtocolError) -> bytes | None:
    """The BAD_REQUEST answer to a malformed request, or None when there is nobody to answer.

    Answered: datagrams whose fixed header was readable and names a known request op. The
    reply echoes the request id but replaces the fields that made the header invalid (version,
    unknown flags, out-of-range slot or server ids), so that it always decodes. Not answered:
    no readable header, a reply (never answer a reply: no ping-pong), or an unknown op (its
    reply op would be unknown too, so no client could decode it).
    """
    h = error.header
    if h is None or h.op & REPLY_BIT or h.op not in _OPS:
        return None
    fields = (
        VERSION,
        h.op,
        h.flags & _KNOWN_FLAGS,
        _OK,
        h.keyspace,
        h.slot if h.slot < SLOT_COUNT else 0,
        h.source_id if h.source_id <= MAX_SERVER_ID else 0,
        h.target_id if h.target_id <= MAX_SERVER_ID else 0,
        h.request_id,
    )
    return encode_reply(fields, Status.BAD_REQUEST, ErrorReply(str(error)))


def request_type(op: Op) -> type:
    """The body class of requests with this op."""
    return _REQUEST_TYPES[op]
