"""RESP requests and replies: Redis' framing and errors, and RESP3 replies as a RESP2 client
gets them from a real redis-server."""

from __future__ import annotations

import random
import re
import socket

import pytest

from netmigrate.rediscmd.resp import (
    OK,
    Double,
    Error,
    ProtocolError,
    ReplyParser,
    RequestReader,
    RespSet,
    encode,
    split_inline,
    split_replies,
)


def test_requests_split_anywhere_come_out_whole() -> None:
    wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nx1\r\nPING\r\n*1\r\n$4\r\nPING\r\n"
    for cut in range(1, len(wire)):
        reader = RequestReader()
        got = []
        reader.feed(wire[:cut])
        got += list(reader.commands())
        reader.feed(wire[cut:])
        got += list(reader.commands())
        assert got == [[b"SET", b"k", b"v\r\nx1"], [b"PING"], [b"PING"]], cut


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+foo\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
        (b'SET "k v\r\n', "unbalanced quotes"),
    ],
)
def test_protocol_errors_use_redis_words(wire: bytes, message: str) -> None:
    reader = RequestReader()
    reader.feed(wire)
    with pytest.raises(ProtocolError, match=re.escape(message)):
        list(reader.commands())


def test_inline_quoting_as_redis_does() -> None:
    assert split_inline(b'set "a b" \'c\\\'d\' "\\x41\\n"') == [b"set", b"a b", b"c'd", b"A\n"]
    assert split_inline(b"   ") == []


def test_encode_both_protocols() -> None:
    value = {b"a": [1, None, Double("1.5")], b"s": RespSet([True])}
    assert encode(value, 3) == (
        b"%2\r\n$1\r\na\r\n*3\r\n:1\r\n_\r\n,1.5\r\n$1\r\ns\r\n~1\r\n#t\r\n"
    )
    assert encode(value, 2) == (
        b"*4\r\n$1\r\na\r\n*3\r\n:1\r\n$-1\r\n$3\r\n1.5\r\n$1\r\ns\r\n*1\r\n:1\r\n"
    )
    assert encode(OK) == b"+OK\r\n" and encode(Error("ERR no")) == b"-ERR no\r\n"
    assert ReplyParser.parse(encode(value, 3)) == value


def _raw(port: int, proto: int, *commands: list[bytes]) -> list[bytes]:
    """Replies of a real Redis, as bytes, one per command, on a connection of ``proto``."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        reader_cmds = [[b"HELLO", str(proto).encode()], *commands]
        s.sendall(b"".join(encode(list(c)) for c in reader_cmds))
        data = b""
        replies: list[bytes] = []
        while len(replies) < len(reader_cmds):
            data += s.recv(65536)
            replies = []
            pos = 0
            while pos < len(data):
                p = ReplyParser(data[pos:])
                try:
                    p._value()
                except (ProtocolError, ValueError):
                    break
                replies.append(data[pos : pos + p._pos])
                pos += p._pos
        return replies[1:]


@pytest.mark.redis
@pytest.mark.parametrize("proto", [2, 3])
def test_real_replies_parse_and_encode_back_to_the_same_bytes(redis_server, proto: int) -> None:  # type: ignore[no-untyped-def]
    server = redis_server(cluster=False)
    c = server.client()
    c.hset("h", mapping={"f": "1", "g": "2"})
    c.zadd("z", {"m": 1.5, "n": 0.1})
    c.sadd("s", "x")
    commands = [
        [b"HGETALL", b"h"],
        [b"ZSCORE", b"z", b"m"],
        [b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"],
        [b"SMEMBERS", b"s"],
        [b"GET", b"missing"],
        [b"CONFIG", b"GET", b"maxmemory"],
        [b"LPOP", b"missing", b"2"],
        [b"INCR", b"h"],
        [b"SET", b"k", b"v"],
        [b"EXISTS", b"k"],
    ]
    replies = _raw(server.port, proto, *commands)
    assert len(replies) == len(commands)
    for raw in replies:
        assert encode(ReplyParser.parse(raw), proto) == raw
    assert ReplyParser.parse(replies[-2]) == OK
    assert isinstance(ReplyParser.parse(replies[-3]), Error)


def test_replies_one_after_another_are_cut_where_each_ends() -> None:
    replies = [
        b"+OK\r\n",
        b"$-1\r\n",
        b"$5\r\na\r\nbc\r\n",  # a bulk may hold CRLF: it is cut by its length
        b"*-1\r\n",
        b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n",
        b"-ERR x\r\n",
        b"%1\r\n+k\r\n,1.5\r\n",
        b"|1\r\n+a\r\n+b\r\n:7\r\n",
    ]
    assert split_replies(b"".join(replies), len(replies)) == replies
    with pytest.raises(ProtocolError):
        split_replies(b"+OK\r\n$3\r\nab", 2)
    with pytest.raises(ProtocolError, match="trailing"):
        split_replies(b"+OK\r\n+OK\r\n:1\r\n", 2)


def _parse_in_reads(reader: RequestReader, reads: list[bytes]) -> list[object]:
    """Requests (and a protocol error, as its text) of ``reads`` fed one after another."""
    out: list[object] = []
    try:
        for data in reads:
            reader.feed(data)
            out += list(reader.commands())
    except ProtocolError as e:
        out.append(f"error: {e}")
    return out


class _SlowReader(RequestReader):
    """The Python parser alone: the reference the hiredis path must equal."""

    def _parsed_whole(self, data: bytes) -> bool:
        return False


def test_hiredis_path_equals_the_python_parser_on_any_cut_and_odd_input() -> None:
    rng = random.Random(15)
    pieces = [
        b"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n",
        b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*2\r\n$3\r\nGET\r\n$5\r\na\r\n+b\r\n",  # status-like bytes inside a value
        b"*1\r\n$6\r\n*1\r\n:7\r\n",  # the sentinel's bytes inside a value
        b"PING\r\n",
        b"*1\r\n+foo\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*1\r\n|1\r\n+a\r\n+b\r\n$1\r\nx\r\n",
        b"*1\r\n=7\r\ntxt:abc\r\n",
        b"*1\r\n$3\r\nabcXY",
    ]
    for _ in range(3000):
        wire = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(0, 3))))
        reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        assert _parse_in_reads(RequestReader(), reads) == _parse_in_reads(_SlowReader(), reads), (
            reads
        )


def test_whole_reads_of_requests_take_the_hiredis_path() -> None:
    reader = RequestReader()
    reader.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * 3)
    assert len(reader._ready) == 3 and not reader._buf
    assert list(reader.commands()) == [[b"GET", b"k"]] * 3
    reader.feed(b"*2\r\n$3\r\nGET\r\n$1\r\n")  # cut: the Python parser keeps it
    assert not reader._ready and list(reader.commands()) == []
    reader.feed(b"k\r\n")
    assert list(reader.commands()) == [[b"GET", b"k"]]
