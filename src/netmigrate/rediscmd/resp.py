"""RESP, the Redis serialization protocol: requests in, replies out, in RESP2 or RESP3.

A server of plain Redis clients (``netmigrate gateway``) reads requests with
:class:`RequestReader` (multibulk arrays and the inline form telnet users type, with Redis' own
protocol error texts) and writes its own replies with :func:`encode` in the protocol the
connection chose with ``HELLO``. Replies of Redis itself are not converted between protocols:
their shape depends on the command (``ZRANGE ... WITHSCORES`` is a flat array in RESP2 and an
array of pairs in RESP3), so the command runs on a Redis connection of the client's protocol
and its reply bytes travel unchanged. :class:`ReplyParser` reads such replies into Python
values for the client library.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hiredis

CRLF = b"\r\n"
#: Redis' limits for a request (``proto-max-bulk-len`` default, and the multibulk length).
MAX_BULK = 512 * 1024 * 1024
MAX_MULTIBULK = 1024 * 1024
_MAX_INLINE = 64 * 1024


class ProtocolError(Exception):
    """The client broke the protocol; Redis answers the text and closes the connection."""


@dataclass(frozen=True)
class Error:
    """An error reply (``-ERR ...``)."""

    message: str


@dataclass(frozen=True)
class Status:
    """A simple string reply (``+OK``)."""

    text: str


@dataclass(frozen=True)
class Double:
    """A double reply, kept as Redis formatted it (RESP2 sends the same text as a bulk)."""

    text: str

    @classmethod
    def of(cls, x: float) -> Double:
        return cls(_double_text(x))


@dataclass(frozen=True)
class BigNumber:
    digits: str


@dataclass(frozen=True)
class Verbatim:
    format: str
    text: bytes


@dataclass(frozen=True)
class Push:
    items: list[Any]


@dataclass(frozen=True)
class RespSet:
    items: list[Any]


class _NullArray:
    """RESP2's null array (``*-1``, e.g. LPOP of a missing key with a count); RESP3's null."""

    def __repr__(self) -> str:
        return "NULL_ARRAY"


OK = Status("OK")
NULL_ARRAY = _NullArray()


#: Fed after a read to hiredis, see :meth:`RequestReader._parsed_whole`; an integer in a request
#: is a protocol error, so no request of a client parses as this.
_SENTINEL = b"*1\r\n:7\r\n"
_SENTINEL_VALUE = [7]


class RequestReader:
    """Incremental parser of client requests; :meth:`feed` then iterate :meth:`commands`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        #: Requests parsed by hiredis, not yet taken; they came before anything in ``_buf``.
        self._ready: deque[list[bytes]] = deque()
        self._fast = hiredis.Reader()

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf) and data[:1] == b"*" and self._parsed_whole(data):
            return
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _parsed_whole(self, data: bytes) -> bool:
        """Parse ``data`` with hiredis (~10x faster than :meth:`_one`) when it is nothing but
        whole multibulk requests of bulk strings, the usual read of a pipelining client;
        False (nothing taken) otherwise, and the Python parser reads it with Redis' own
        errors. A read is at most a few hundred KiB, far below MAX_BULK and MAX_MULTIBULK, so
        a request within one read never exceeds them."""
        if b"\n+" in data or b"\n=" in data or b"\n|" in data:
            # hiredis gives a status or verbatim string as bytes like a bulk one, and skips
            # attributes: a request holding one (or a value holding these bytes) goes the slow
            # way, which refuses the first two as Redis does.
            return False
        fast = self._fast
        # hiredis cannot tell whether a request was cut by the read (it keeps a half-parsed
        # one without buffered bytes): a sentinel request comes out last, as itself, only
        # when the read ended on a request's boundary.
        fast.feed(data)
        fast.feed(_SENTINEL)
        got: list[list[bytes]] = []
        try:
            while (cmd := fast.gets()) is not False:
                got.append(cmd)
        except (hiredis.ProtocolError, hiredis.ReplyError):
            got = []
        if not got or got[-1] != _SENTINEL_VALUE or fast.has_data():
            self._fast = hiredis.Reader()
            return False
        got.pop()
        requests = []
        for cmd in got:
            if cmd is None or cmd == []:  # *-1 and *0: no request, as in _one
                continue
            if type(cmd) is not list or not all(type(a) is bytes for a in cmd):
                return False  # the reader is clean: the sentinel came out
            requests.append(cmd)
        self._ready.extend(requests)
        return True

    def commands(self) -> Iterator[list[bytes]]:
        """Every complete request buffered so far (an empty inline line is skipped)."""
        ready = self._ready
        while ready:
            yield ready.popleft()
        while True:
            cmd = self._one()
            if cmd is None:
                return
            if cmd:
                yield cmd

    def _one(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return None
        if buf[pos] != 0x2A:  # '*'
            return self._inline()
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > _MAX_INLINE:
                raise ProtocolError("Protocol error: too big mbulk count string")
            return None
        try:
            count = int(buf[pos + 1 : end])
        except ValueError:
            raise ProtocolError("Protocol error: invalid multibulk length") from None
        if count > MAX_MULTIBULK:
            raise ProtocolError("Protocol error: invalid multibulk length")
        p = end + 2
        args: list[bytes] = []
        for _ in range(max(count, 0)):
            if p >= len(buf):
                return None
            if buf[p] != 0x24:  # '$'
                raise ProtocolError(f"Protocol error: expected '$', got '{chr(buf[p])}'")
            end = buf.find(b"\r\n", p)
            if end < 0:
                if len(buf) - p > _MAX_INLINE:
                    raise ProtocolError("Protocol error: too big bulk count string")
                return None
            try:
                size = int(buf[p + 1 : end])
            except ValueError:
                raise ProtocolError("Protocol error: invalid bulk length") from None
            if size < 0 or size > MAX_BULK:
                raise ProtocolError("Protocol error: invalid bulk length")
            start = end + 2
            if len(buf) < start + size + 2:
                return None
            args.append(bytes(buf[start : start + size]))
            p = start + size + 2
        self._pos = p
        return args

    def _inline(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos)
        if end < 0:
            if len(buf) - pos > _MAX_INLINE:
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line = bytes(buf[pos:end]).rstrip(b"\r")
        self._pos = end + 1
        return split_inline(line)


def split_inline(line: bytes) -> list[bytes]:
    """Arguments of an inline request, with Redis' quoting rules (``sdssplitargs``)."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i : i + 1].isspace():
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        quote = line[i : i + 1] if line[i : i + 1] in (b'"', b"'") else b""
        if quote:
            i += 1
            while True:
                if i >= n:
                    raise ProtocolError("Protocol error: unbalanced quotes in request")
                c = line[i : i + 1]
                if quote == b'"' and c == b"\\" and i + 1 < n:
                    nxt = line[i + 1 : i + 2]
                    if nxt == b"x" and i + 3 < n and _is_hex(line[i + 2 : i + 4]):
                        cur.append(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    cur += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}.get(
                        nxt, nxt
                    )
                    i += 2
                    continue
                if quote == b"'" and c == b"\\" and line[i + 1 : i + 2] == b"'":
                    cur += b"'"
                    i += 2
                    continue
                if c == quote:
                    i += 1
                    if i < n and not line[i : i + 1].isspace():
                        raise ProtocolError("Protocol error: unbalanced quotes in request")
                    break
                cur += c
                i += 1
        else:
            while i < n and not line[i : i + 1].isspace():
                cur += line[i : i + 1]
                i += 1
        args.append(bytes(cur))


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(chr(c) in "0123456789abcdefABCDEF" for c in b)


# -- replies ----------------------------------------------------------------------------------


def encode(value: Any, proto: int = 2) -> bytes:
    """One reply in RESP2 or RESP3 from Python values and the marker types above."""
    out = bytearray()
    _encode(value, proto, out)
    return bytes(out)


def _encode(v: Any, proto: int, out: bytearray) -> None:
    if v is None:
        out += b"_\r\n" if proto == 3 else b"$-1\r\n"
    elif v is NULL_ARRAY:
        out += b"_\r\n" if proto == 3 else b"*-1\r\n"
    elif isinstance(v, bool):
        if proto == 3:
            out += b"#t\r\n" if v else b"#f\r\n"
        else:
            out += b":1\r\n" if v else b":0\r\n"
    elif isinstance(v, int):
        out += b":%d\r\n" % v
    elif isinstance(v, (bytes, bytearray, memoryview)):
        out += b"$%d\r\n" % len(v)
        out += v
        out += CRLF
    elif isinstance(v, str):
        _encode(v.encode(), proto, out)
    elif isinstance(v, Status):
        out += b"+" + v.text.encode() + CRLF
    elif isinstance(v, Error):
        out += b"-" + v.message.replace("\r", " ").replace("\n", " ").encode() + CRLF
    elif isinstance(v, Double):
        text = v.text.encode()
        if proto == 3:
            out += b"," + text + CRLF
        else:
            _encode(text, proto, out)
    elif isinstance(v, BigNumber):
        if proto == 3:
            out += b"(" + v.digits.encode() + CRLF
        else:
            _encode(v.digits.encode(), proto, out)
    elif isinstance(v, Verbatim):
        if proto == 3:
            body = v.format.encode() + b":" + v.text
            out += b"=%d\r\n" % len(body) + body + CRLF
        else:
            _encode(v.text, proto, out)
    elif isinstance(v, dict):
        if proto == 3:
            out += b"%%%d\r\n" % len(v)
        else:
            out += b"*%d\r\n" % (2 * len(v))
        for k, item in v.items():
            _encode(k, proto, out)
            _encode(item, proto, out)
    elif isinstance(v, RespSet):
        out += (b"~%d\r\n" if proto == 3 else b"*%d\r\n") % len(v.items)
        for item in v.items:
            _encode(item, proto, out)
    elif isinstance(v, Push):
        out += (b">%d\r\n" if proto == 3 else b"*%d\r\n") % len(v.items)
        for item in v.items:
            _encode(item, proto, out)
    elif isinstance(v, (list, tuple)):
        out += b"*%d\r\n" % len(v)
        for item in v:
            _encode(item, proto, out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as RESP")


def _double_text(x: float) -> str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e17:
        return str(int(x))
    return repr(x)


class ReplyParser:
    """Parse one RESP2/RESP3 reply from bytes into Python values and the marker types."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @classmethod
    def parse(cls, data: bytes) -> Any:
        p = cls(data)
        value = p._value()
        if p._pos != len(data):
            raise ProtocolError("trailing bytes after a reply")
        return value

    def _line(self) -> bytes:
        end = self._data.find(b"\r\n", self._pos)
        if end < 0:
            raise ProtocolError("truncated reply")
        line = self._data[self._pos + 1 : end]
        self._pos = end + 2
        return line

    def _bulk(self, size: int) -> bytes:
        start = self._pos
        if len(self._data) < start + size + 2:
            raise ProtocolError("truncated reply")
        self._pos = start + size + 2
        return self._data[start : start + size]

    def _value(self) -> Any:
        if self._pos >= len(self._data):
            raise ProtocolError("truncated reply")
        t = self._data[self._pos : self._pos + 1]
        line = self._line()
        if t == b"+":
            return Status(line.decode())
        if t == b"-":
            return Error(line.decode(errors="replace"))
        if t == b":":
            return int(line)
        if t == b"$":
            n = int(line)
            return None if n < 0 else self._bulk(n)
        if t in (b"*", b"~", b">"):
            n = int(line)
            if n < 0:
                return NULL_ARRAY
            items = [self._value() for _ in range(n)]
            return items if t == b"*" else RespSet(items) if t == b"~" else Push(items)
        if t == b"%":
            return {_hashable(self._value()): self._value() for _ in range(int(line))}
        if t == b"_":
            return None
        if t == b"#":
            return line == b"t"
        if t == b",":
            return Double(line.decode())
        if t == b"(":
            return BigNumber(line.decode())
        if t == b"=":
            body = self._bulk(int(line))
            fmt, _, text = body.partition(b":")
            return Verbatim(fmt.decode(), text)
        if t == b"|":  # attributes: metadata RESP2 clients never see; skip it
            for _ in range(int(line)):
                self._value()
                self._value()
            return self._value()
        raise ProtocolError(f"unknown RESP type byte {t!r}")


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def reply_end(data: bytes, pos: int = 0) -> int:
    """Where the reply starting at ``pos`` ends (RESP2 or RESP3), without decoding it; for
    cutting replies that came one after another. Raises :class:`ProtocolError` when the bytes
    end inside it."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        raise ProtocolError("truncated reply")
    t = data[pos]
    if t in _AGGREGATE:
        n = int(data[pos + 1 : end])
        p = end + 2
        for _ in range(n * _AGGREGATE[t]):
            p = reply_end(data, p)
        if t == 0x7C:  # '|': attributes come before the reply they describe
            p = reply_end(data, p)
        return p
    if t in _BLOB:
        n = int(data[pos + 1 : end])
        if n < 0:
            return end + 2
        p = end + 2 + n + 2
        if p > len(data):
            raise ProtocolError("truncated reply")
        return p
    return end + 2


#: Aggregate type bytes and how many replies each counted element is: *, ~, > hold n; %, | n pairs.
_AGGREGATE = {0x2A: 1, 0x7E: 1, 0x3E: 1, 0x25: 2, 0x7C: 2}
#: Blob types: $ bulk, ! blob error, = verbatim.
_BLOB = frozenset({0x24, 0x21, 0x3D})


def split_replies(data: bytes, n: int) -> list[bytes]:
    """``n`` replies that came one after another, each as its own bytes."""
    if n == 1:
        return [data]
    out: list[bytes] = []
    pos = 0
    for _ in range(n):
        end = reply_end(data, pos)
        out.append(data[pos:end])
        pos = end
    if pos != len(data):
        raise ProtocolError("trailing bytes after the replies")
    return out
