"""IPv4 corner cases: header checksum, fragments, options, TTL wrap (docs/pipeline.md)."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from nmconf_driver import Conformance, checksum_problems

from netmigrate.protocol.constants import REPLY_BIT, Op

pytestmark = pytest.mark.root

PAYLOAD = b"\x00\x03abc"


def test_ipv4_header_with_a_bad_checksum_is_dropped_and_counted_as_such(sw: Conformance):
    """Nothing of a corrupt header is trusted (no op counted, no steering); the drop is counted
    under its own decision, so that it can be told from the others."""
    ka = sw.world.ka
    good = sw.from_client(sw.header(Op.GET, ka, sw.fresh_slot()), ka, payload=PAYLOAD)
    right = struct.unpack_from("!H", bytes(good.build()), 24)[0]
    bad = replace(good, ip_chksum=right ^ 0x0101)
    assert checksum_problems(bytes(bad.build()))  # the frame really is broken
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(sw.world.client.switch_port, bad)
        sw.expect_none()
    assert sw.decisions(delta) == {"BAD_CHECKSUM": 1}
    assert ops.packets() == {}


@pytest.mark.parametrize(
    ("flags", "frag"), [(1, 0), (0, 8), (1, 8)], ids=["first fragment", "last", "middle"]
)
def test_fragments_are_plain_ipv4(sw: Conformance, flags: int, frag: int):
    """No UDP or NetMigrate parsing of a fragment: all fragments take the same path."""
    ka = sw.world.ka
    r1 = sw.world.servers[1].host
    sent = replace(
        sw.from_client(sw.header(Op.SET, ka, sw.fresh_slot()), ka, payload=PAYLOAD),
        ip_flags=flags,
        frag=frag,
    )
    with sw.counting() as delta, sw.counting("op_counter") as ops:
        sw.send(sw.world.client.switch_port, sent)
        # The UDP checksum of a fragment covers bytes that are not all here: check IPv4 only.
        raw = sw.expect(r1.switch_port, sw.plain(sent, r1), check_checksums=False)
        sw.expect_none()
    assert [p for p in checksum_problems(raw) if "IPv4" in p] == []
    assert sw.decisions(delta) == {"PLAIN_FORWARD": 1}
    assert ops.packets() == {}


def test_dont_fragment_flag_alone_is_not_a_fragment(sw: Conformance):
    ka = sw.world.ka
    owner = sw.world.servers[1]
    sent = replace(
        sw.from_client(sw.header(Op.GET, ka, sw.fresh_slot()), ka, payload=PAYLOAD), ip_flags=2
    )
    sw.send(sw.world.client.switch_port, sent)
    sw.expect(owner.port, sw.steered(sent, owner))
    sw.expect_none()


def _rfc1624_ttl_update(header_checksum: int, old_ttl: int, proto: int) -> int:
    """HC' = ~(~HC + ~m + m') over the 16-bit word holding TTL and protocol."""
    old_word = (old_ttl << 8) | proto
    new_word = (((old_ttl - 1) & 0xFF) << 8) | proto
    total = (~header_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_ipv4_options_keep_a_wrong_checksum_wrong(sw: Conformance):
    """Options: no re-parse, so the TTL change is applied to the checksum incrementally."""
    ka = sw.world.ka
    r1 = sw.world.servers[1].host
    good = sw.from_client(
        sw.header(Op.GET, ka, sw.fresh_slot()), ka, payload=PAYLOAD, ip_options=True
    )
    wrong = (struct.unpack_from("!H", bytes(good.build()), 24)[0] + 0x1234) & 0xFFFF
    sent = replace(good, ip_chksum=wrong)
    expected = replace(sw.plain(sent, r1), ip_chksum=_rfc1624_ttl_update(wrong, 64, 17))
    sw.send(sw.world.client.switch_port, sent)
    raw = sw.expect(r1.switch_port, expected, check_checksums=False)
    sw.expect_none()
    assert checksum_problems(raw)  # still wrong, as documented


@pytest.mark.parametrize(("ttl", "after"), [(1, 0), (0, 255)])
def test_ttl_is_decremented_modulo_256(sw: Conformance, ttl: int, after: int):
    ka = sw.world.ka
    owner, r1 = sw.world.servers[1], sw.world.servers[1].host
    steered = sw.from_client(sw.header(Op.GET, ka, sw.fresh_slot()), ka, ttl=ttl)
    plain = replace(steered, header=sw.header(Op.GET | REPLY_BIT, ka, 1))
    sw.send(sw.world.client.switch_port, steered)
    raw = sw.expect(owner.port, replace(sw.steered(steered, owner), ttl=after))
    assert raw[22] == after
    sw.send(sw.world.client.switch_port, plain)
    raw = sw.expect(r1.switch_port, replace(sw.plain(plain, r1), ttl=after))
    assert raw[22] == after
    sw.expect_none()
