"""Encode and strictly decode NetMigrate datagrams.

A datagram is the fixed header (:data:`~netmigrate.protocol.constants.HEADER`) followed by an
op-specific payload of length-prefixed keys (u16) and values (u32). Decoding checks every
length and field and raises :class:`ProtocolError` on anything else: no partial results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netmigrate.protocol.constants import (
    COUNT,
    HEADER,
    HEADER_LEN,
    I64,
    KEY_LEN,
    MAX_SERVER_ID,
    REPLY_BIT,
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
_KNOWN_FLAGS = int(Flag.DOUBLE_READ | Flag.TO_TARGET | Flag.RETRY)
_OPS = frozenset(int(op) for op in Op)
_STATUSES = frozenset(int(s) for s in Status)


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

    @property
    def is_reply(self) -> bool:
        return bool(self.op & REPLY_BIT)

    @property
    def request_op(self) -> Op:
        return Op(self.op & ~REPLY_BIT)

    def pack(self) -> bytes:
        return HEADER.pack(
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

    def reply(self, status: Status = Status.OK) -> Header:
        """The header of the reply to this request: same ids and flags, reply bit set."""
        return replace(self, op=self.op | REPLY_BIT, status=int(status))


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
class Control:
    """Body of SLOT_START / SLOT_COMPLETE / SLOT_SET / SLOT_READ: everything is in the header."""


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


Request = Get | Set | Delete | IncrBy | MGet | MSet | Control
Reply = ValueReply | SetReply | CountReply | IntReply | MGetReply | Empty | ErrorReply
Body = Request | Reply

_REQUEST_TYPES: dict[Op, type] = {
    Op.GET: Get,
    Op.SET: Set,
    Op.DEL: Delete,
    Op.INCRBY: IncrBy,
    Op.MGET: MGet,
    Op.MSET: MSet,
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


def _key(key: bytes) -> bytes:
    if len(key) > _MAX_KEY:
        raise ValueError(f"key of {len(key)} bytes exceeds {_MAX_KEY}")
    return KEY_LEN.pack(len(key)) + key


def _value(value: bytes) -> bytes:
    return VALUE_LEN.pack(len(value)) + value


def _count(n: int) -> bytes:
    if not 1 <= n <= 0xFFFF:
        raise ValueError(f"item count {n} out of range 1..65535")
    return COUNT.pack(n)


def encode_body(body: Body) -> bytes:
    match body:
        case Get(key) | Delete(key):
            return _key(key)
        case Set(key, value, ttl_ms, condition):
            if ttl_ms < 0:
                raise ValueError("ttl_ms must be >= 0")
            return U8.pack(int(condition)) + U64.pack(ttl_ms) + _key(key) + _value(value)
        case IncrBy(key, delta):
            return _key(key) + I64.pack(delta)
        case MGet(keys):
            return _count(len(keys)) + b"".join(_key(k) for k in keys)
        case MSet(items):
            return _count(len(items)) + b"".join(_key(k) + _value(v) for k, v in items)
        case Control() | Empty():
            return b""
        case ValueReply(value):
            return b"" if value is None else _value(value)
        case SetReply(applied):
            return U8.pack(1 if applied else 0)
        case CountReply(count):
            return U32.pack(count)
        case IntReply(value):
            return I64.pack(value)
        case MGetReply(values):
            out = [_count(len(values))]
            for v in values:
                out.append(b"\x00" if v is None else b"\x01" + _value(v))
            return b"".join(out)
        case ErrorReply(message):
            raw = message.encode("utf-8")[:1024]
            return KEY_LEN.pack(len(raw)) + raw
    raise TypeError(f"not a NetMigrate body: {body!r}")


def encode(header: Header, body: Body) -> bytes:
    """The datagram for ``header`` and ``body``."""
    return header.pack() + encode_body(body)


# ---------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    __slots__ = ("data", "pos", "header")

    def __init__(self, data: bytes, pos: int, header: Header) -> None:
        self.data = data
        self.pos = pos
        self.header = header

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError(message, self.header)

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fail(f"truncated {what}: need {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, st, what: str) -> int:
        if self.pos + st.size > len(self.data):
            raise self.fail(f"truncated {what} at offset {self.pos}")
        (v,) = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return v

    def key(self) -> bytes:
        return self.take(self.unpack(KEY_LEN, "key length"), "key")

    def value(self) -> bytes:
        return self.take(self.unpack(VALUE_LEN, "value length"), "value")

    def count(self) -> int:
        n = self.unpack(COUNT, "item count")
        if n == 0:
            raise self.fail("item count must be at least 1")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes after the payload")


def decode_header(data: bytes) -> Header:
    """Decode and validate the fixed header only (what the switch parses)."""
    if len(data) < HEADER_LEN:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than the header")
    version, op, flags, status, keyspace, slot, source_id, target_id, request_id = (
        HEADER.unpack_from(data)
    )
    header = Header(
        op=op,
        request_id=request_id,
        keyspace=keyspace,
        slot=slot,
        flags=flags,
        status=status,
        source_id=source_id,
        target_id=target_id,
        version=version,
    )
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}", header)
    if op & ~REPLY_BIT not in _OPS:
        raise ProtocolError(f"unknown op 0x{op:02x}", header)
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x}", header)
    if status not in _STATUSES:
        raise ProtocolError(f"unknown status {status}", header)
    if not op & REPLY_BIT and status != Status.OK:
        raise ProtocolError("a request must carry status OK", header)
    if slot >= SLOT_COUNT:
        raise ProtocolError(f"slot {slot} out of range 0..{SLOT_COUNT - 1}", header)
    if source_id > MAX_SERVER_ID or target_id > MAX_SERVER_ID:
        raise ProtocolError("server id 255 is reserved", header)
    return header


def _decode_request(r: _Reader, op: Op) -> Request:
    match op:
        case Op.GET:
            return Get(r.key())
        case Op.DEL:
            return Delete(r.key())
        case Op.SET:
            cond = r.unpack(U8, "set condition")
            if cond > SetCondition.XX:
                raise r.fail(f"unknown set condition {cond}")
            ttl_ms = r.unpack(U64, "ttl")
            if ttl_ms >= 1 << 62:
                raise r.fail("ttl out of range")
            key = r.key()
            return Set(key, r.value(), ttl_ms, SetCondition(cond))
        case Op.INCRBY:
            key = r.key()
            return IncrBy(key, r.unpack(I64, "delta"))
        case Op.MGET:
            return MGet(tuple(r.key() for _ in range(r.count())))
        case Op.MSET:
            n = r.count()
            items = []
            for _ in range(n):
                key = r.key()
                items.append((key, r.value()))
            return MSet(tuple(items))
        case _:
            return Control()


def _decode_reply(r: _Reader, op: Op, status: int) -> Reply:
    if status == Status.NOT_FOUND and op == Op.GET:
        return ValueReply(None)
    if status != Status.OK:
        return ErrorReply(r.take(r.unpack(KEY_LEN, "message length"), "message").decode(
            "utf-8", "replace"))
    match op:
        case Op.GET:
            return ValueReply(r.value())
        case Op.SET:
            applied = r.unpack(U8, "applied")
            if applied > 1:
                raise r.fail("applied flag must be 0 or 1")
            return SetReply(bool(applied))
        case Op.DEL:
            return CountReply(r.unpack(U32, "count"))
        case Op.INCRBY:
            return IntReply(r.unpack(I64, "value"))
        case Op.MGET:
            values: list[bytes | None] = []
            for _ in range(r.count()):
                present = r.unpack(U8, "presence")
                if present > 1:
                    raise r.fail("presence flag must be 0 or 1")
                values.append(r.value() if present else None)
            return MGetReply(tuple(values))
        case _:
            return Empty()


def decode(data: bytes) -> Message:
    """Decode a whole datagram, request or reply. Raises :class:`ProtocolError`."""
    header = decode_header(data)
    r = _Reader(data, HEADER_LEN, header)
    op = Op(header.op & ~REPLY_BIT)
    body = _decode_reply(r, op, header.status) if header.is_reply else _decode_request(r, op)
    r.end()
    return Message(header, body)


def request_type(op: Op) -> type:
    """The body class of requests with this op."""
    return _REQUEST_TYPES[op]
