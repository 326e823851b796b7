"""At-most-once across a crash: a real `netmigrate agent` process is SIGKILLed after applying
an INCRBY, restarted on the same Redis and port, and gets the client's retry (D16)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netmigrate.protocol.codec import IncrBy, IntReply, decode, encode_reply, encode_request
from netmigrate.protocol.constants import HEADER, HEADER_LEN, Flag, Op, Status
from netmigrate.protocol.slot import key_slot

KEYSPACE = 50000


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    log: Path
    udp: tuple[str, int]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator:
    """Factory: start `netmigrate agent` on ``listen``; returns once it printed READY.
    Every process is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(redis_url: str, listen: str) -> Proc:
        log = tmp_path / f"agent-{len(started)}.log"
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "netmigrate.cli", "agent", "--redis", redis_url,
                 "--listen", listen, "--keyspace", str(KEYSPACE), "--server-id", "3",
                 "--slots", "all", "--log-level", "INFO"],
                stdout=subprocess.PIPE, stderr=log_file, text=True, env=dict(os.environ),
            )  # fmt: skip
        started.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        assert line.startswith("READY"), f"agent did not start: {line!r}\n{log.read_text()}"
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        host, _, port = fields["udp"].rpartition(":")
        return Proc(proc, log, (host, int(port)))

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


def recv(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data, _ = sock.recvfrom(65536)
    return data


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    sock.settimeout(0)
    while True:
        try:
            out.append(sock.recvfrom(65536)[0])
        except BlockingIOError:
            return out


def kill(agent: Proc) -> None:
    agent.proc.send_signal(signal.SIGKILL)
    assert agent.proc.wait(10) == -signal.SIGKILL


@pytest.mark.parametrize("reply_seen", [True, False], ids=["reply-seen", "reply-lost"])
def test_retry_after_sigkill_is_not_applied_again(
    cluster_redis, start_agent, udp, reply_seen: bool
) -> None:
    redis = cluster_redis.client()
    key = b"crash:ctr"
    rid = (0xC0FFEE << 32) | 1
    request = encode_request(Op.INCRBY, rid, KEYSPACE, key_slot(key), IncrBy(key, 7))
    # What the agent answers this request, byte for byte.
    expected = encode_reply(HEADER.unpack(request[:HEADER_LEN]), Status.OK, IntReply(7))

    first = start_agent(cluster_redis.url, "127.0.0.1:0")
    udp.sendto(request, first.udp)
    if reply_seen:
        assert recv(udp) == expected
    else:
        # The client never reads the answer: the agent dies as soon as Redis holds the write.
        deadline = time.monotonic() + 10
        while redis.get(key) != b"7":
            assert time.monotonic() < deadline, "the write never reached Redis"
            time.sleep(0.002)
    kill(first)
    # Whatever the dead agent still sent is that answer (the "lost" client ignores it).
    assert drain(udp) in ([], [expected])

    second = start_agent(cluster_redis.url, f"{first.udp[0]}:{first.udp[1]}")
    assert second.udp == first.udp  # the same address the client keeps retrying
    retry = request
    if not reply_seen:  # a client's resend carries RETRY; the answer is the original's
        retry = encode_request(
            Op.INCRBY, rid, KEYSPACE, key_slot(key), IncrBy(key, 7), flags=Flag.RETRY
        )
    udp.sendto(retry, second.udp)
    assert recv(udp) == expected
    assert redis.get(key) == b"7"  # applied once

    # The restarted agent serves new requests normally.
    fresh = encode_request(Op.INCRBY, rid + 1, KEYSPACE, key_slot(key), IncrBy(key, 1))
    udp.sendto(fresh, second.udp)
    assert decode(recv(udp)).body == IntReply(8)
    kill(second)
    assert "restored 1 recent request ids from Redis" in second.log.read_text()
