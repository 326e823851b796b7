"""Packets per second of the pipeline alone: ``process()`` for a stable-slot GET.

The state is a minimal dict-backed PipelineState (one dict lookup per table, prebuilt
ActionCalls), so the number is the pipeline's own cost, not the runtime's. Run with
``pytest tests/bench/micro --benchmark-only``; ``packets_per_second`` is in the extra info.
"""

from __future__ import annotations

from collections.abc import Mapping

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from support.scapy_layer import NetMigrate

from netmigrate.protocol.constants import CPU_PORT, Op
from netmigrate.switch.interfaces import ActionCall
from netmigrate.switch.pipeline import process

SERVICE_IP = 0x0A0000C8  # 10.0.0.200
SERVICE_PORT = 50000
BATCH = 1000


class LeanState:
    """A PipelineState whose calls cost about one dict lookup each."""

    def __init__(self) -> None:
        self.cpu_port = CPU_PORT
        ks = ActionCall(
            "NetMigrateIngress.set_keyspace",
            {"keyspace_id": 1, "default_owner": 1, "slot_base": 0},
            True,
        )
        port = ActionCall("NetMigrateIngress.set_server_port", {"port": 1}, True)
        rewrite = ActionCall(
            "NetMigrateEgress.rewrite_to_server",
            {"dst_mac": 0x020000000011, "dst_ip": 0x0A00000B, "udp_port": 50001},
            True,
        )
        self.tables = {
            "NetMigrateIngress.keyspace": lambda k: ks,
            "NetMigrateIngress.server_port": lambda k: port,
            "NetMigrateEgress.server_rewrite": lambda k: rewrite,
        }
        self.slot_map = [0] * 65536
        self.counts: dict[tuple[str, int], int] = {}

    def table_lookup(self, table: str, key: Mapping[str, int]) -> ActionCall:
        return self.tables[table](key)

    def register_read(self, register: str, index: int) -> int:
        return self.slot_map[index]

    def register_write(self, register: str, index: int, value: int) -> None:
        self.slot_map[index] = value

    def counter_add(self, counter: str, index: int, nbytes: int) -> None:
        k = (counter, index)
        self.counts[k] = self.counts.get(k, 0) + 1

    def clone_session(self, session_id: int) -> list[tuple[int, int]]:
        return []

    def digest(self, name: str, fields: Mapping[str, int]) -> None:
        pass


def test_stable_get_packets_per_second(benchmark) -> None:
    frame = bytes(
        Ether(src="02:00:00:00:00:64", dst="02:00:00:00:00:fe")
        / IP(src="10.0.0.100", dst="10.0.0.200")
        / UDP(sport=40000, dport=SERVICE_PORT)
        / NetMigrate(op=Op.GET, slot=1234, request_id=42)
        / Raw(b"\x00\x10user:0000001234")
    )
    state = LeanState()
    frames = [frame] * BATCH

    def run() -> list:
        out = None
        for f in frames:
            out = process(f, 4, state)
        return out

    [out] = benchmark(run)
    assert out.port == 1
    assert state.counts[("NetMigrateIngress.op_counter", Op.GET)] >= BATCH
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["packets_per_second"] = round(BATCH / stats.stats.mean)
