"""The agent's UDP socket: large kernel buffers (bursts of a whole wave of requests queue there
instead of being dropped), non-blocking, bound to the data address."""

from __future__ import annotations

import socket

#: Read buffer: any UDP payload fits, so an oversized request is seen whole and refused.
RECV_SIZE = 65536
SOCKET_BUFFER = 4 << 20


def open_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (IPv6 when the host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
