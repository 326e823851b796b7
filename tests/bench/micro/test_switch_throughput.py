"""Frames per second of the lab switch's runtime: the real SwitchState under the pipeline, and
the data plane with its PACKET_MMAP rings over real veths (in this process, no gRPC).

Run with ``pytest tests/bench/micro/test_switch_throughput.py --benchmark-only``;
``frames_per_second`` is in the extra info. The end-to-end number (the real ``netmigrate
switch`` process, one CPU, offered load, latency) comes from ``python -m
netmigrate.bench.micro.switch`` and is recorded in docs/benchmarks.md ("Lab switch").
"""

from __future__ import annotations

import os

import pytest
from finsy.p4schema import P4Schema
from finsy.proto import p4r

from netmigrate.bench.micro.switch import get_frames
from netmigrate.lab.forwarding import lab_servers, netmigrate_entries
from netmigrate.lab.veth_topology import host_socket, veth_topology
from netmigrate.resources import p4info_path
from netmigrate.switch import pipeline
from netmigrate.switch.dataplane import Dataplane
from netmigrate.switch.entities import write_update
from netmigrate.switch.ports import open_ports
from netmigrate.switch.runtime import SwitchRuntime
from netmigrate.switch.state import SwitchState

BATCH = 1000


def configured_state(runtime: SwitchRuntime) -> SwitchState:
    state = SwitchState(runtime.index, runtime.cpu_port)
    schema = P4Schema(runtime.p4info)
    for e in netmigrate_entries(lab_servers([1, 2]), default_owner=2)[0]:
        te = e.finsy_entry().encode(schema)
        write_update(state, p4r.Update(type=p4r.Update.INSERT, entity=te))
    return state


def test_pipeline_with_switch_state(benchmark):
    runtime = SwitchRuntime(p4info_path())
    state = configured_state(runtime)
    frames = get_frames(BATCH)
    process = pipeline.process

    def run() -> int:
        n = 0
        for frame in frames:
            n += len(process(frame, 1, state))
        return n

    assert run() == BATCH  # every GET steered to its owner, one output each
    benchmark(run)
    if benchmark.stats:
        benchmark.extra_info["frames_per_second"] = BATCH / benchmark.stats.stats.mean


@pytest.mark.parametrize("rings", [True, False], ids=["rings", "plain-sockets"])
def test_dataplane_over_veths(benchmark, rings):
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, AF_PACKET); CI runs as root")
    runtime = SwitchRuntime(p4info_path())
    runtime.state = configured_state(runtime)
    frames = get_frames(BATCH)
    with veth_topology([1, 2]) as topo:
        ports = open_ports({1: "sw1", 2: "sw2"}, topo.switch_ns, rings=rings)
        dataplane = Dataplane(runtime, ports, pipeline.process, pipeline.process_packet_out)
        sender = host_socket(topo.hosts[1])
        try:

            def setup():
                # The kernel delivers in the sender's context: all are queued on return.
                for frame in frames:
                    sender.send(frame)
                return (), {}

            def drain() -> None:
                while True:
                    before = ports[1].counters.rx
                    dataplane._on_readable(ports[1])
                    if ports[1].counters.rx == before:
                        return

            setup()
            drain()
            assert ports[2].counters.tx == BATCH
            benchmark.pedantic(drain, setup=setup, rounds=5)
            # Every round forwarded its whole batch, nothing was lost.
            assert ports[2].counters.tx == ports[1].counters.rx
            assert ports[1].counters.rx % BATCH == 0 and ports[1].counters.rx >= 2 * BATCH
            if benchmark.stats:
                benchmark.extra_info["frames_per_second"] = BATCH / benchmark.stats.stats.mean
        finally:
            sender.close()
            dataplane.close()
