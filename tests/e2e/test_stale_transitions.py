"""Issue #12, item 9: stale transitions are harmless.

The datagrams of a migration A -> B are captured on A's link as A sent them. After A -> B and
B -> A, a new A -> B of the same slot starts; while it copies, the first migration's SLOT_START
and then its SLOT_COMPLETE are sent again from A's link (same port, same source address: the
switch's sender check passes). Without epochs the old COMPLETE passed the owner check (from
the owner, naming the current target) and handed the slot to B in the middle of its copy.
Now both are dropped and counted as TRANSITION_STALE, the slot stays MIGRATING A -> B until
its own COMPLETE, and the history checker of the client load stays clean.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from netmigrate.agent.reserved import slot_tag
from netmigrate.lab.stack import (
    Stack,
    StackConfig,
    configure_switch,
    stack_up,
    start_switch_process,
    stop_switch_process,
)
from netmigrate.migration import MigrationOptions, reconcile, run
from netmigrate.migration.switch_view import check_switch, read_slot_entries, read_slots
from netmigrate.netns import call_in_netns
from netmigrate.p4rt import P4RTSession, read_counters
from netmigrate.protocol.constants import HEADER_LEN, Decision, Op
from netmigrate.protocol.layout import NM_OP, NM_SLOT

from .conftest import agent, assert_clean, keyspace, redis_of, switch

SLOT = 777
#: The slots of the switch-restart scenarios (their own, so the scenarios do not depend on
#: order).
RESTART_SLOT = 778
LAB_UP_SLOT = 779
#: Keys put in SLOT so that the third migration's copy lasts seconds at RATE keys/s.
FILLER = 3000
RATE = 400
FAST = MigrationOptions(parallel=1, grace=0.3)
SLOW = MigrationOptions(parallel=1, batch=50, rate=RATE, grace=0.3)
pytestmark = pytest.mark.timeout(600)

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
_ETH, _IP, _UDP = 14, 20, 8  # the agents' frames: IPv4 without options
_NM = _ETH + _IP + _UDP


@dataclass
class Capture:
    """Frames server ``netns`` sends that carry a transition of ``slot`` (as sent, with the
    interface they left by)."""

    netns: str
    slot: int
    frames: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (op, frame, addr)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        sock = call_in_netns(
            self.netns, socket.socket, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)
        )
        sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, args=(sock,), daemon=True)
        self._thread.start()

    def _read(self, sock: socket.socket) -> None:
        with sock:
            while not self._stop.is_set():
                try:
                    frame, addr = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if addr[2] != _PACKET_OUTGOING or len(frame) < _NM + HEADER_LEN:
                    continue
                if frame[12:14] != b"\x08\x00" or frame[_ETH + 9] != socket.IPPROTO_UDP:
                    continue
                op = frame[_NM + NM_OP]
                slot = int.from_bytes(frame[_NM + NM_SLOT : _NM + NM_SLOT + 2], "big")
                if op in (Op.SLOT_START, Op.SLOT_COMPLETE) and slot == self.slot:
                    self.frames.append((op, frame, addr))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def first(self, op: Op) -> tuple[bytes, tuple]:
        return next((f, a) for o, f, a in self.frames if o == op)


def replay(netns: str, frame: bytes, addr: tuple) -> None:
    """Send ``frame`` again out of the interface it left by, byte for byte."""
    sock = call_in_netns(netns, socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind((addr[0], 0))
        sock.send(frame)


def fill_slot(stack: Stack, owner: int) -> None:
    r = redis_of(stack, owner)
    tag = slot_tag(SLOT)
    pipe = r.pipeline(transaction=False)
    for i in range(FILLER):
        pipe.set(b"{" + tag + b"}:filler:%d" % i, b"x" * 512)
    pipe.execute()


def test_replayed_transitions_of_an_earlier_migration_are_dropped(
    stack: Stack, load_factory
) -> None:
    a = stack.default_owner
    b = next(s.server_id for s in stack.servers if s.server_id != a)
    ks = keyspace(stack)
    lp = load_factory("--preload", "5000", "--concurrency", "8", name="stale")
    lp.wait_ready()
    fill_slot(stack, a)

    async def scenario() -> dict:
        cap = Capture(stack.server(a).netns, SLOT)
        cap.start()
        try:
            first = await run(
                agent(stack, a),
                agent(stack, b),
                [SLOT],
                keyspace=ks,
                switch=switch(stack),
                options=FAST,
                timeout=120,
            )
        finally:
            cap.stop()
        old_start, old_complete = cap.first(Op.SLOT_START), cap.first(Op.SLOT_COMPLETE)
        back = await run(
            agent(stack, b),
            agent(stack, a),
            [SLOT],
            keyspace=ks,
            switch=switch(stack),
            options=FAST,
            timeout=120,
        )

        # A reader beside the controller: a backup client (election id below the controller's),
        # which may read tables, registers and counters but never takes the primary role.
        session = P4RTSession(stack.p4runtime, device_id=stack.device_id, election_id=1)
        await session.open(require_primary=False, take_over=False)
        try:
            facts = await check_switch(session, ks, [a, b])

            async def entry() -> tuple[int, int]:
                return (await read_slots(session, ks, [SLOT], facts=facts))[SLOT]

            async def stale() -> int:
                cells = await read_counters(
                    session, "decision_counter", [Decision.TRANSITION_STALE]
                )
                return cells[Decision.TRANSITION_STALE].packets if cells else 0

            # B -> A's COMPLETE wrote A's id into the owner byte.
            migrating = (a, b)
            again = asyncio.ensure_future(
                run(
                    agent(stack, a),
                    agent(stack, b),
                    [SLOT],
                    keyspace=ks,
                    switch=switch(stack),
                    options=SLOW,
                    timeout=300,
                )
            )
            deadline = time.monotonic() + 60
            while await entry() != migrating:
                assert not again.done(), again.result()
                assert time.monotonic() < deadline, "the new migration never started"
                await asyncio.sleep(0.05)
            before = await stale()
            replay(stack.server(a).netns, *old_start)
            await asyncio.sleep(0.3)
            after_start = await entry()
            replay(stack.server(a).netns, *old_complete)
            await asyncio.sleep(0.3)
            after_complete = await entry()
            dropped = await stale() - before
            still_copying = not again.done()
            third = await again
            final = await entry()
        finally:
            await session.close()
        return {
            "states": [first.state, back.state, third.state],
            "after_start": after_start,
            "after_complete": after_complete,
            "migrating": migrating,
            "dropped": dropped,
            "still_copying": still_copying,
            "final": final,
        }

    got = asyncio.run(scenario())
    doc = lp.stop()
    print("MEASURED", got, {"ops": doc["ops"], "errors_total": doc["errors_total"]})
    assert got["still_copying"], "the replays came after the new migration had finished"
    assert got["after_start"] == got["migrating"], "the old START changed the slot"
    assert got["after_complete"] == got["migrating"], "the old COMPLETE handed the slot over"
    assert got["dropped"] == 2
    assert got["states"] == ["FINALIZED"] * 3
    assert got["final"] == (b, 0)
    assert_clean(doc)


def test_a_restarted_switch_drops_an_earlier_start_once_reconciled(
    stack: Stack, stack_config: StackConfig
) -> None:
    """A restarted switch has every epoch at 0. reconcile writes the agents' epochs back, so a
    replayed SLOT_START of an earlier migration is stale again instead of flipping the slot
    (before, any START with an epoch >= 1 did, and the slot's writes went to a target that
    refused them until the next reconcile)."""
    a = stack.default_owner
    b = next(s.server_id for s in stack.servers if s.server_id != a)
    ks = keyspace(stack)
    agents = [agent(stack, s.server_id) for s in stack.servers]

    async def scenario() -> dict:
        cap = Capture(stack.server(a).netns, RESTART_SLOT)
        cap.start()
        try:
            first = await run(
                agent(stack, a), agent(stack, b), [RESTART_SLOT], keyspace=ks,
                switch=switch(stack), options=FAST, timeout=120,
            )  # fmt: skip
        finally:
            cap.stop()
        old_start = cap.first(Op.SLOT_START)
        back = await run(
            agent(stack, b), agent(stack, a), [RESTART_SLOT], keyspace=ks,
            switch=switch(stack), options=FAST, timeout=120,
        )  # fmt: skip
        await asyncio.to_thread(stop_switch_process, stack)
        await asyncio.to_thread(start_switch_process, stack_config, stack)
        await configure_switch(stack, stack_config.topology())
        fixed = await reconcile(switch(stack), ks, agents)
        again = await reconcile(switch(stack), ks, agents)

        session = P4RTSession(stack.p4runtime, device_id=stack.device_id, election_id=1)
        await session.open(require_primary=False, take_over=False)
        try:
            facts = await check_switch(session, ks, [a, b])

            async def stale() -> int:
                cells = await read_counters(
                    session, "decision_counter", [Decision.TRANSITION_STALE]
                )
                return cells[Decision.TRANSITION_STALE].packets if cells else 0

            before = await stale()
            replay(stack.server(a).netns, *old_start)
            await asyncio.sleep(0.3)
            entry = (await read_slots(session, ks, [RESTART_SLOT], facts=facts))[RESTART_SLOT]
            dropped = await stale() - before
        finally:
            await session.close()
        return {
            "states": [first.state, back.state],
            "fixed": fixed,
            "again": again,
            "entry": entry,
            "dropped": dropped,
        }

    got = asyncio.run(scenario())
    print("MEASURED", got)
    assert got["states"] == ["FINALIZED"] * 2
    # The restart kept A's entry right (A is the default owner): only epochs were missing.
    assert got["fixed"].changed and got["fixed"].epochs_raised >= 1, got["fixed"]
    assert not got["again"].changed and got["again"].slots_written == 0, got["again"]
    assert got["entry"] == (a, 0), "the old START flipped the slot again"
    assert got["dropped"] == 1


def test_lab_up_after_a_switch_restart_puts_entries_and_epochs_back(
    stack: Stack, stack_config: StackConfig
) -> None:
    """`netmigrate lab up` repairs a lab whose switch restarted: the pipeline and tables, and
    from the agents the slot map and the slots' transition epochs."""
    a = stack.default_owner
    b = next(s.server_id for s in stack.servers if s.server_id != a)
    ks = keyspace(stack)
    moved = asyncio.run(
        run(
            agent(stack, a), agent(stack, b), [LAB_UP_SLOT], keyspace=ks,
            switch=switch(stack), options=FAST, timeout=120,
        )
    )  # fmt: skip
    assert moved.state == "FINALIZED"
    stop_switch_process(stack)
    repaired = stack_up(stack_config)

    async def read() -> dict:
        session = P4RTSession(stack.p4runtime, device_id=stack.device_id, election_id=1)
        await session.open(require_primary=False, take_over=False)
        try:
            facts = await check_switch(session, ks, [a, b])
            return await read_slot_entries(session, ks, [LAB_UP_SLOT], facts=facts, epochs=True)
        finally:
            await session.close()

    entry = asyncio.run(read())[LAB_UP_SLOT]
    print("MEASURED", repaired.actions, entry)
    assert any(x.startswith("switch slot map from the agents") for x in repaired.actions)
    assert entry.pair == (b, 0) and entry.epoch == 1
    assert not stack_up(stack_config).changed  # and a second lab up changes nothing
