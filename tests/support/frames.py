"""Receiving frames in tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def recv_matching(
    sock: socket.socket, predicate: Callable[[bytes], bool], timeout: float = 2.0
) -> bytes | None:
    """The first frame on ``sock`` that ``predicate`` accepts, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            return None
        if predicate(frame):
            return frame
    return None
