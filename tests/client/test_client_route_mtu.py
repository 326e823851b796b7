"""The client's default limit is its route's MTU, not its interface's (needs root: a namespace).

In a namespace with a veth pair at MTU 9000 and a route carrying ``mtu 1400``, the
client derives 8972 towards the interface's subnet and 1372 through the smaller route. Opening
a client sends nothing, so no peer is needed.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
from collections.abc import Iterator

import pytest

from netmigrate.client import AsyncClient
from netmigrate.netns import call_in_netns


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nmt-mtu-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip(
            "-n",
            name,
            "link",
            "add",
            "d0",
            "mtu",
            "9000",
            "type",
            "veth",
            "peer",
            "d1",
            "mtu",
            "9000",
        )
        _ip("-n", name, "address", "add", "10.78.0.2/24", "dev", "d0")
        _ip("-n", name, "link", "set", "d1", "up")
        _ip("-n", name, "link", "set", "d0", "up")
        _ip("-n", name, "route", "add", "10.77.0.0/16", "via", "10.78.0.1", "mtu", "1400")
        yield name
    finally:
        _ip("netns", "delete", name)


def _limit(netns: str, host: str) -> int:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        return sock

    async def factory() -> socket.socket:
        return await asyncio.to_thread(call_in_netns, netns, make)

    async def opened() -> int:
        async with AsyncClient((host, 50000), 50000, socket_factory=factory) as c:
            return c.max_datagram

    return asyncio.run(opened())


def test_limit_follows_the_route_mtu(netns: str) -> None:
    assert _limit(netns, "10.78.0.9") == 9000 - 28
    assert _limit(netns, "10.77.3.4") == 1400 - 28
