"""Reply bytes exactly as a Redis (or our gateway) sent them, for byte-for-byte comparisons."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from netmigrate.rediscmd.resp import ProtocolError, ReplyParser, encode


def split_replies(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole replies at the start of ``data``, and what is left (a reply still coming)."""
    out = []
    while data:
        p = ReplyParser(data)
        try:
            p._value()
        except (ProtocolError, ValueError, IndexError):
            break
        out.append(data[: p._pos])
        data = data[p._pos :]
    return out, data


def read_replies(s: socket.socket, n: int) -> list[bytes]:
    """The next ``n`` replies on an open connection (whatever came after them is lost)."""
    data, out = b"", []
    while len(out) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} replies")
        data += chunk
        got, data = split_replies(data)
        out += got
    return out


def raw_replies(port: int, commands: Sequence[Sequence[bytes]]) -> list[bytes]:
    """The reply bytes of each command, sent in one write on one connection, as they came."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(encode(list(c)) for c in commands))
        data, out = b"", []
        while len(out) < len(commands):
            data += s.recv(65536)
            got, data = split_replies(data)
            out += got
        return out


def raw_values(port: int, calls: list[bytes]) -> list[object]:
    """Send prepared RESP ``calls`` in one write; the parsed reply of each, in order."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(calls))
        data, out = b"", []
        while len(out) < len(calls):
            data += s.recv(65536)
            while data:
                p = ReplyParser(data)
                try:
                    value = p._value()
                except (ProtocolError, ValueError, IndexError):
                    break
                out.append(value)
                data = data[p._pos :]
        return out
