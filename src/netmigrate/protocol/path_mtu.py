"""The largest datagram a path carries unfragmented, read from the kernel.

One request or reply is one UDP datagram and is never fragmented (DESIGN section 4): a
fragment the switch cannot parse is steered like plain IPv4, so a fragmented request to a
migrating or moved slot never reassembles anywhere. The limit is therefore the path MTU minus
the IP and UDP headers. The kernel knows the MTU of the route towards a peer (the interface's
MTU, or a smaller ``mtu`` on the route, or one learned by path MTU discovery): a connected UDP
socket reports it as ``IP_MTU`` without sending anything.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from netmigrate.protocol.constants import (
    IPV4_UDP_OVERHEAD,
    IPV6_UDP_OVERHEAD,
    MIN_DATAGRAM,
    UDP_MAX_PAYLOAD,
)

# Linux values; the socket module does not export them.
_IP_MTU = 14
_IPV6_MTU = 24
_SIOCGIFMTU = 0x8921
_SIOCGIFADDR = 0x8915
_IFREQ = struct.Struct("16s16x")


class PathMtuError(OSError):
    """The MTU towards a peer or of an interface could not be read."""


def datagram_limit(mtu: int, family: int = socket.AF_INET) -> int:
    """Largest UDP payload that fits ``mtu`` unfragmented (capped at what UDP can carry)."""
    overhead = IPV6_UDP_OVERHEAD if family == socket.AF_INET6 else IPV4_UDP_OVERHEAD
    limit = min(mtu - overhead, UDP_MAX_PAYLOAD)
    if limit < MIN_DATAGRAM:
        raise PathMtuError(f"MTU {mtu} leaves {limit} bytes for a datagram (< {MIN_DATAGRAM})")
    return limit


def socket_route_mtu(sock: socket.socket, peer: tuple[str, int] | tuple[str, int, int, int]) -> int:
    """MTU of the route ``sock`` (an unconnected UDP socket, then connected) takes to ``peer``.

    Connecting a UDP socket only picks the route; nothing is sent.
    """
    level, option = (
        (socket.IPPROTO_IPV6, _IPV6_MTU)
        if sock.family == socket.AF_INET6
        else (socket.IPPROTO_IP, _IP_MTU)
    )
    try:
        sock.connect(peer)
        return int(sock.getsockopt(level, option))
    except OSError as e:
        raise PathMtuError(f"no route MTU towards {peer[0]}: {e.strerror or e}") from None


def route_mtu(host: str, port: int = 9) -> int:
    """MTU of the route this host takes to ``host`` (an IP address)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        return socket_route_mtu(sock, (host, port))


def route_datagram_limit(host: str) -> int:
    """Largest datagram towards ``host`` that is not fragmented on this host's route to it."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    return datagram_limit(route_mtu(host), family)


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, _IFREQ.pack(name.encode()[:15]))


def interface_mtu(name: str) -> int:
    """MTU of the network interface ``name`` (SIOCGIFMTU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            data = _ifreq(sock, _SIOCGIFMTU, name)
        except OSError as e:
            raise PathMtuError(f"interface {name}: {e.strerror or e}") from None
    return int(struct.unpack_from("=i", data, 16)[0])


def interface_of(address: str) -> str | None:
    """Name of the interface that holds IPv4 ``address`` (its primary address), if any."""
    wanted = socket.inet_aton(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                data = _ifreq(sock, _SIOCGIFADDR, name)
            except OSError:
                continue  # no IPv4 address
            if data[20:24] == wanted:
                return name
    return None


def smallest_interface_mtu() -> int:
    """Smallest MTU of the non-loopback interfaces (loopback's when there is no other)."""
    mtus = {name: interface_mtu(name) for _, name in socket.if_nameindex()}
    others = [mtu for name, mtu in mtus.items() if name != "lo"]
    if others:
        return min(others)
    if "lo" in mtus:
        return mtus["lo"]
    raise PathMtuError("no network interface")
