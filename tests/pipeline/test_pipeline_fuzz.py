"""Arbitrary frames: the pipeline never raises, and what it sends is well formed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_lab import CLIENT, SERVERS, MemoryState, build_lab, ipv4_checksum_ok, request

from netmigrate.protocol.constants import CPU_PORT, Op
from netmigrate.protocol.layout import encode_packet_out
from netmigrate.switch.pipeline import process

PORTS = [CLIENT.port, *(s.port for s in SERVERS.values()), CPU_PORT, 0]
OPS = [int(op) for op in Op] + [int(op) | 0x80 for op in Op] + [0, 0x7F, 0xFF]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    sender = draw(st.sampled_from([CLIENT, *SERVERS.values()]))
    frame = bytes(
        request(
            draw(st.sampled_from(OPS)),
            draw(st.one_of(st.integers(0, 20), st.integers(0, 0xFFFF))),
            flags=draw(st.integers(0, 255)),
            src=sender,
            source_id=draw(st.integers(0, 5)),
            target_id=draw(st.integers(0, 5)),
            body=draw(st.binary(max_size=40)),
        )
    )
    return frame[: draw(st.integers(0, len(frame)))] if draw(st.booleans()) else frame


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=st.one_of(requests(), st.binary(max_size=80)),
    port=st.sampled_from(PORTS),
    cpu_header=st.tuples(st.integers(0, 511), st.integers(0, 1)),
    slots=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5), st.integers(0, 5))),
)
def test_any_frame(frame: bytes, port: int, cpu_header: tuple[int, int], slots: list) -> None:
    state = build_lab(MemoryState())  # strict: asserts names, widths, index ranges
    for slot, owner, target in slots:
        state.set_slot(16384 + slot, owner, target)
    if port == CPU_PORT:
        frame = encode_packet_out(*cpu_header) + frame
    outputs = process(frame, port, state)
    direct = port == CPU_PORT and cpu_header[1] == 0
    for out in outputs:
        assert type(out.frame) is bytes
        assert 0 <= out.port < 511
        if out.port == CPU_PORT:
            assert set(out.metadata) == {"ingress_port", "reason"}
        if not direct and out.frame[14] & 0x0F == 5:
            assert ipv4_checksum_ok(out.frame)  # only verified headers get through
    assert sum(p for p, _ in state.counters["NetMigrateIngress.decision_counter"].values()) <= 1
