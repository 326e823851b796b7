"""A test's or bench run's lab takes a ``control_base`` whose agent forwarders are all free:
a free port's neighbours are often taken, and a lab's forwarder that cannot bind fails the
whole lab at start-up (seen when tests ran beside other labs)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from netmigrate.lab import stack


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_block_with_a_taken_neighbour_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _listener()
    good = stack.free_control_base(3) + 1  # a block that was free a moment ago
    # The first candidate's second forwarder port is taken; the second candidate is free.
    candidates: Iterator[int] = iter([taken.getsockname()[1] - 1, good])
    monkeypatch.setattr(stack, "free_tcp_port", lambda: next(candidates))
    try:
        assert stack.free_control_base(3) == good - 1
    finally:
        taken.close()


def test_no_free_block_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _listener()
    monkeypatch.setattr(stack, "free_tcp_port", lambda: taken.getsockname()[1])
    try:
        with pytest.raises(stack.LabError, match="consecutive free TCP ports"):
            stack.free_control_base(3)
    finally:
        taken.close()
