"""The largest datagram of a path, read from the kernel (loopback only: no root needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from netmigrate.protocol.constants import LAB_MTU, UDP_MAX_PAYLOAD
from netmigrate.protocol.path_mtu import (
    PathMtuError,
    datagram_limit,
    interface_mtu,
    interface_of,
    route_datagram_limit,
    route_mtu,
    smallest_interface_mtu,
)


def test_limit_is_the_mtu_minus_ip_and_udp_headers() -> None:
    assert datagram_limit(1500) == 1472
    assert datagram_limit(LAB_MTU) == 8972
    assert datagram_limit(1500, socket.AF_INET6) == 1452
    assert datagram_limit(65536) == UDP_MAX_PAYLOAD  # loopback: UDP's own cap
    with pytest.raises(PathMtuError, match="MTU 80"):
        datagram_limit(80)


def test_interface_mtu_is_the_kernels() -> None:
    assert interface_mtu("lo") == int(Path("/sys/class/net/lo/mtu").read_text())
    with pytest.raises(PathMtuError, match="nosuch0"):
        interface_mtu("nosuch0")
    names = [name for _, name in socket.if_nameindex()]
    others = [interface_mtu(n) for n in names if n != "lo"]
    assert smallest_interface_mtu() == (min(others) if others else interface_mtu("lo"))


def test_route_mtu_of_loopback() -> None:
    # The route's MTU is capped at IP's 65535; the datagram at UDP's 65507.
    assert route_mtu("127.0.0.1") == min(interface_mtu("lo"), 65535)
    assert route_datagram_limit("127.0.0.1") == UDP_MAX_PAYLOAD
    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.77") is None
