"""op_counter and decision_counter, read over P4Runtime, match the traffic that was sent."""

from __future__ import annotations

from collections import Counter

import pytest
from nmconf_driver import Conformance
from nmconf_world import FrameSpec

from netmigrate.protocol.constants import DECISION_COUNT, Decision, Op
from netmigrate.protocol.layout import PACKET_OUT_LEN

pytestmark = pytest.mark.root


def test_counters_cover_every_index(sw: Conformance):
    decisions = sw.p4rt.counters("decision_counter")
    assert sorted(decisions) == list(range(DECISION_COUNT))
    assert {int(d) for d in Decision} <= set(decisions)
    assert sorted(sw.p4rt.counters("op_counter")) == list(range(256))


def test_counters_match_what_was_sent(sw: Conformance):
    ka, kb = sw.world.ka, sw.world.kb
    client = sw.world.client
    r3 = sw.world.servers[3].host
    migrating = sw.fresh_slot()
    sw.slot_set(kb, migrating, 0, 3)

    plan = [(Op.GET, ka, 3), (Op.SET, ka, 2), (Op.INCRBY, kb, 1), (Op.MSET, kb, 2)]
    plan += [(Op.SET, kb, 2), (Op.MGET, kb, 2)]  # these two on the migrating slot
    frames: list[tuple[Op | None, str, FrameSpec]] = []
    for i, (op, ks, count) in enumerate(plan):
        for n in range(count):
            slot = migrating if i >= 4 else sw.fresh_slot()
            payload = b"\x00\x02k" + bytes([n]) * (n * 7)
            frames.append((op, "ns", sw.from_client(sw.header(op, ks, slot), ks, payload=payload)))
    for n in range(3):
        plain = FrameSpec(
            eth_src=client.mac,
            eth_dst=client.switch_mac,
            ip_src=client.ip,
            ip_dst=r3.ip,
            sport=999,
            dport=53,
            payload=b"p" * (10 + n),
        )
        frames.append((None, "plain", plain))

    want_ops: Counter[int] = Counter()
    want_op_bytes: Counter[int] = Counter()
    want_decisions: Counter[str] = Counter()
    want_decision_bytes: Counter[str] = Counter()
    expected_outputs = 0
    for op, kind, spec in frames:
        size = len(spec.build())
        if kind == "plain":
            decision = "PLAIN_FORWARD"
        else:
            want_ops[op] += 1
            want_op_bytes[op] += size
            if spec.header.slot != migrating:
                decision = "TO_OWNER"
            else:
                decision = "REDIRECTED" if op == Op.SET else "DOUBLE_READ"
        want_decisions[decision] += 1
        want_decision_bytes[decision] += size
        expected_outputs += 2 if decision == "DOUBLE_READ" else 1

    with sw.counting() as decisions, sw.counting("op_counter") as ops:
        for _, _, spec in frames:
            sw.send(client.switch_port, spec)
        # Wait for every output, so that the counters are read after the switch processed
        # everything.
        received = 0
        while received < expected_outputs:
            result = sw.test.dataplane.poll(timeout=2)
            assert result.packet is not None, f"only {received} of {expected_outputs} frames"
            received += 1
        sw.expect_none()

    assert ops.packets() == dict(want_ops)
    assert ops.bytes() == dict(want_op_bytes)
    assert sw.decisions(decisions) == dict(want_decisions)
    byte_deltas = {Decision(i).name: n for i, n in decisions.bytes().items()}
    assert byte_deltas == dict(want_decision_bytes)


def test_packet_out_bytes_include_the_controller_header(sw: Conformance):
    ka = sw.world.ka
    header = sw.header(Op.SLOT_READ, ka, sw.fresh_slot())
    size = len(sw.cpu_frame(ka, header).build())
    with sw.counting() as decisions, sw.counting("op_counter") as ops:
        sw.cpu_op(ka, header)
    assert decisions.packets() == {Decision.CPU_OP: 1}
    assert decisions.bytes() == {Decision.CPU_OP: size + PACKET_OUT_LEN}
    assert ops.packets() == {Op.SLOT_READ: 1}
    assert ops.bytes() == {Op.SLOT_READ: size + PACKET_OUT_LEN}
