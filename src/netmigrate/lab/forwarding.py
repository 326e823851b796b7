"""The lab switch's forwarding state for one keyspace: table entries and clone sessions.

The lab stack (:mod:`netmigrate.lab.stack`) installs what :func:`netmigrate_entries` builds
for its servers; the switch benchmark and the switch, p4rt and collection tests use the same
builder on a flat plan (:func:`lab_servers`: server ``n`` behind switch port ``n``), so the
entries every one of them runs on are built in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netmigrate.protocol.constants import CPU_PORT, SERVICE_PORT_BASE

#: The opaque P4Runtime device config installed with the pipeline (the lab switch stores it
#: and gives it back; it needs no compiled program).
DEVICE_CONFIG = b'{"lab": "opaque device config"}'


@dataclass(frozen=True)
class LabServer:
    server_id: int
    port: int
    ip: str
    mac: int
    udp_port: int


#: The service address of the flat plan's keyspace (a NetMigrate service port).
SERVICE_IP = "10.9.0.100"


def lab_servers(ports: Sequence[int]) -> list[LabServer]:
    """Server ``n`` behind switch port ``n``: 10.9.0.n, MAC 02:00:00:00:09:n, UDP 50001."""
    return [
        LabServer(n, n, f"10.9.0.{n}", 0x020000000900 + n, SERVICE_PORT_BASE + 1) for n in ports
    ]


def netmigrate_entries(
    servers: Sequence[LabServer],
    *,
    keyspace_id: int = 1,
    default_owner: int = 1,
    service_ip: str = SERVICE_IP,
    cpu_senders: bool = False,
) -> tuple[list[Any], list[Any]]:
    """(table entries, clone sessions) of one keyspace served by ``servers``.

    ``cpu_senders`` also lets every server's SLOT_START/COMPLETE come from the CPU port
    (tests inject them with packet-out instead of from a host).
    """
    from netmigrate.p4rt import CloneSessionSpec, TableEntrySpec

    entries = [
        TableEntrySpec(
            "NetMigrateIngress.keyspace",
            {"hdr.ipv4.dstAddr": service_ip, "hdr.udp.dstPort": SERVICE_PORT_BASE},
            "NetMigrateIngress.set_keyspace",
            {"keyspace_id": keyspace_id, "default_owner": default_owner, "slot_base": 0},
        ),
        TableEntrySpec(
            "NetMigrateIngress.ipv4_lpm",
            {"hdr.ipv4.dstAddr": "10.9.0.0/24"},
            "NetMigrateIngress.ipv4_forward",
            {"dst_mac": servers[-1].mac, "port": servers[-1].port},
        ),
    ]
    clones = []
    for s in servers:
        entries += [
            TableEntrySpec(
                "NetMigrateIngress.server_port",
                {"meta.dest_server": s.server_id},
                "NetMigrateIngress.set_server_port",
                {"port": s.port},
            ),
            TableEntrySpec(
                "NetMigrateEgress.server_rewrite",
                {"meta.egress_server": s.server_id},
                "NetMigrateEgress.rewrite_to_server",
                {"dst_mac": s.mac, "dst_ip": s.ip, "udp_port": s.udp_port},
            ),
            TableEntrySpec(
                "NetMigrateIngress.sender_check",
                {
                    "hdr.nm.source_id": s.server_id,
                    "standard_metadata.ingress_port": s.port,
                    "hdr.ipv4.srcAddr": s.ip,
                },
                "NetMigrateIngress.sender_verified",
            ),
        ]
        if cpu_senders:
            entries.append(
                TableEntrySpec(
                    "NetMigrateIngress.sender_check",
                    {
                        "hdr.nm.source_id": s.server_id,
                        "standard_metadata.ingress_port": CPU_PORT,
                        "hdr.ipv4.srcAddr": s.ip,
                    },
                    "NetMigrateIngress.sender_verified",
                )
            )
        clones.append(CloneSessionSpec.to_port(s.server_id, s.port))
    return entries, clones
