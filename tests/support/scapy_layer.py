"""Scapy layers for tests and conformance vectors: NetMigrate, packet_in and packet_out.

Field names, widths and order come from :data:`netmigrate.protocol.layout.NM_LAYOUT` (itself
derived from the protocol's ``HEADER``) and the controller header layouts in
:mod:`netmigrate.protocol.layout`; op, flag and status names from the protocol enums. UDP
destination ports of the service range decode as :class:`NetMigrate`.

Importing this module binds the layers into scapy (``UDP / NetMigrate`` and back).
"""

from __future__ import annotations

from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    Field,
    FlagsField,
    LongField,
    ShortField,
)
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_bottom_up, bind_layers, bind_top_down

from netmigrate.protocol.constants import (
    REPLY_BIT,
    SERVICE_PORT_BASE,
    SERVICE_PORT_MASK,
    VERSION,
    Flag,
    Op,
    Status,
)
from netmigrate.protocol.layout import NM_LAYOUT, PACKET_IN_FIELDS, PACKET_OUT_FIELDS

__all__ = ["SERVICE_PORTS", "NetMigrate", "PacketIn", "PacketOut"]

_OP_NAMES = {int(op): op.name for op in Op} | {int(op) | REPLY_BIT: f"{op.name}_REPLY" for op in Op}
_FLAG_NAMES = [Flag(1 << bit).name or f"BIT{bit}" for bit in range(8)]
_STATUS_NAMES = {int(s): s.name for s in Status}

#: UDP destination ports the switch parses as NetMigrate.
SERVICE_PORTS = tuple(
    port for port in range(1 << 16) if port & SERVICE_PORT_MASK == SERVICE_PORT_BASE
)


def _field(name: str, width: int) -> Field:
    default = VERSION if name == "version" else 0
    if name == "op":
        return ByteEnumField(name, default, _OP_NAMES)
    if name == "flags":
        return FlagsField(name, default, width, _FLAG_NAMES)
    if name == "status":
        return ByteEnumField(name, default, _STATUS_NAMES)
    by_width = {8: ByteField, 16: ShortField, 64: LongField}
    try:
        return by_width[width](name, default)
    except KeyError:
        raise RuntimeError(f"no scapy field for a {width}-bit NetMigrate field {name}") from None


class NetMigrate(Packet):
    """The fixed NetMigrate header; the body that follows is a Raw payload."""

    name = "NetMigrate"
    fields_desc = [_field(name, width) for name, _, width in NM_LAYOUT]


class PacketOut(Packet):
    """``packet_out`` controller header: in front of a frame the controller sends."""

    name = "PacketOut"
    fields_desc = [BitField(name, 0, width) for name, width in PACKET_OUT_FIELDS]


class PacketIn(Packet):
    """``packet_in`` controller header: in front of a frame the switch sends the controller."""

    name = "PacketIn"
    fields_desc = [BitField(name, 0, width) for name, width in PACKET_IN_FIELDS]


for _port in SERVICE_PORTS:
    bind_bottom_up(UDP, NetMigrate, dport=_port)
bind_top_down(UDP, NetMigrate, dport=SERVICE_PORT_BASE)
bind_layers(PacketOut, Ether)
bind_layers(PacketIn, Ether)
