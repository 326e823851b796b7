"""Steering never grows a frame (issue #12 item 7): a request that fits the client's link
reaches the owner and the migration target at the same size, so the keyspace's largest
datagram (path MTU - 28) holds end to end and nothing past the switch is fragmented."""

from __future__ import annotations

import pytest
from pipeline_lab import CLIENT, SLOT_BASE, MemoryState, request

from netmigrate.protocol.constants import READ_OPS, WRITE_OPS, Flag
from netmigrate.switch.pipeline import process

SLOT = 7
# With the 18-byte NetMigrate header: a 1472-byte UDP payload, a full 1500-byte IPv4 packet.
BODY = bytes(range(256)) * 5 + b"\x00" * 174


@pytest.mark.parametrize("op", sorted(READ_OPS | WRITE_OPS))
@pytest.mark.parametrize(
    ("owner", "target", "copies"),
    [(0, 0, 1), (3, 0, 1), (0, 2, None), (3, 2, None)],
    ids=["stable-default", "stable-moved", "migrating-from-default", "migrating"],
)
def test_every_copy_has_the_size_of_the_request(
    state: MemoryState, op: int, owner: int, target: int, copies: int | None
) -> None:
    state.set_slot(SLOT_BASE + SLOT, owner, target)
    sent = bytes(request(op, SLOT, body=BODY, flags=int(Flag.RETRY)))
    outs = process(sent, CLIENT.port, state)
    # Migrating: writes redirected (one copy), reads double-read (owner copy and a clone).
    expected = copies if copies is not None else (2 if op in READ_OPS else 1)
    assert len(outs) == expected
    assert [len(o.frame) for o in outs] == [len(sent)] * expected
