"""The controller against the real lab switch process (P4Runtime, packet-out slot map):
readiness checks, reconcile of the slot map from the agents (slots moved and in flight), and
finalize refusing to delete keys while the switch disagrees with the agents."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from migration_helpers import KEYSPACE, SOURCE, TARGET, keys_in, until

from netmigrate import migration
from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.lab.forwarding import DEVICE_CONFIG, SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import SwitchProcess, run_switch
from netmigrate.migration import (
    FinalizeResult,
    KeyspaceRef,
    MigrationError,
    MigrationOptions,
    SwitchEndpoint,
)
from netmigrate.p4rt import (
    Keyspace,
    P4RTSession,
    PipelineConfig,
    SlotEntry,
    ensure_clone_sessions,
    ensure_table_entries,
    install_pipeline,
    restore_slot_map,
)
from netmigrate.protocol.constants import SERVICE_PORT_BASE
from netmigrate.resources import p4info_path

SWITCH_KEYSPACE = KeyspaceRef(KEYSPACE, SERVICE_IP, SERVICE_PORT_BASE)


@pytest.fixture
def switch() -> Iterator[SwitchProcess]:
    with run_switch() as sw:
        yield sw


async def configure(address: str, *, entries: bool = True) -> None:
    async with P4RTSession(address, device_id=1, election_id=5) as s:
        await install_pipeline(s, PipelineConfig.load(p4info_path(), DEVICE_CONFIG))
        if entries:
            table, clones = netmigrate_entries(lab_servers([SOURCE, TARGET]), default_owner=SOURCE)
            await ensure_table_entries(s, table)
            await ensure_clone_sessions(s, clones)


async def test_an_unprepared_switch_is_refused_with_what_is_missing(switch, pair) -> None:
    await configure(switch.address, entries=False)
    p = await pair()
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    with pytest.raises(MigrationError) as info:
        await migration.run(
            p.source_ep, p.target_ep, [1], keyspace=SWITCH_KEYSPACE, switch=endpoint
        )
    text = str(info.value)
    assert "no keyspace entry for 10.9.0.100:50000" in text
    assert "no server_port entry for server 2" in text and "no clone session 2" in text
    assert "no sender_check entry for server 1" in text
    assert await migration.status(p.source_ep) == []  # nothing was started


async def test_reconcile_rebuilds_the_slot_map_and_gates_finalize(switch, pair) -> None:
    await configure(switch.address)
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    # The source owns 16 slots only: reconcile reads the switch's entry of every owned slot
    # through packet-in/out (~3000 slots/s), so the whole keyspace would take seconds.
    p = await pair(initial_slots=frozenset(range(16)))
    ra = p.redis_a.client()
    for k in keys_in(5, 10) + keys_in(6, 10) + keys_in(8, 300):
        ra.set(k, b"v")
    # Slots 5 and 6 move (agent level: the switch never saw their transitions).
    done = await migration.run(
        p.source_ep,
        p.target_ep,
        [5, 6],
        keyspace=p.keyspace,
        finalize=False,
        options=MigrationOptions(grace=0),
    )
    assert done.state == "DONE"
    # Slot 8 is kept in flight by a slow copy.
    slow = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [8],
            keyspace=p.keyspace,
            finalize=False,
            options=MigrationOptions(batch=5, rate=100, grace=0, poll=0.05),
        )
    )
    await until(lambda: 8 in p.target.target._slots)

    # Finalize verifies the switch first: it still sends slots 5 and 6 to the source.
    with pytest.raises(MigrationError, match="switch disagrees"):
        await migration.finalize(
            p.source_ep,
            p.target_ep,
            done.migration_id,
            keyspace=SWITCH_KEYSPACE,
            switch=endpoint,
            grace=0,
        )
    assert ra.exists(keys_in(5, 1)[0])  # keys kept

    agents = [p.source_ep, p.target_ep]
    check = await migration.reconcile(endpoint, SWITCH_KEYSPACE, agents, check=True)
    assert check.changed and check.slots_written == 0
    assert check.diff == {
        5: {"before": [SOURCE, 0], "after": [TARGET, 0]},
        6: {"before": [SOURCE, 0], "after": [TARGET, 0]},
        8: {"before": [SOURCE, 0], "after": [SOURCE, TARGET]},
    }
    assert check.slots_checked == 16 and not check.conflicts
    fixed = await migration.reconcile(endpoint, SWITCH_KEYSPACE, agents)
    assert fixed.changed and fixed.slots_written == 3
    # Two controllers' calls at once with the same election id take turns instead of failing.
    again, twice = await asyncio.gather(
        migration.reconcile(endpoint, SWITCH_KEYSPACE, agents),
        migration.reconcile(endpoint, SWITCH_KEYSPACE, agents, check=True),
    )
    assert not again.changed and again.slots_written == 0 and not twice.changed

    final = await migration.finalize(
        p.source_ep,
        p.target_ep,
        done.migration_id,
        keyspace=SWITCH_KEYSPACE,
        switch=endpoint,
        grace=0,
    )
    assert final.switch_verified and final.keys_deleted == 20 and final.slots_finalized == 2
    assert not ra.exists(keys_in(5, 1)[0])
    assert (await slow).state == "DONE"


async def test_finalize_with_repair_writes_back_slots_a_switch_lost(switch, pair) -> None:
    await configure(switch.address)
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    p = await pair(initial_slots=frozenset(range(16)))
    ra = p.redis_a.client()
    for k in keys_in(3, 7):
        ra.set(k, b"v")
    done = await migration.run(
        p.source_ep, p.target_ep, [3], keyspace=p.keyspace, finalize=False,
        options=MigrationOptions(grace=0),
    )  # fmt: skip
    final = await migration.finalize(
        p.source_ep, p.target_ep, done.migration_id, keyspace=SWITCH_KEYSPACE,
        switch=endpoint, grace=0, repair=True,
    )  # fmt: skip
    assert final.slots_reconciled == 1 and final.switch_verified and final.keys_deleted == 7
    check = await migration.reconcile(endpoint, SWITCH_KEYSPACE, [p.source_ep, p.target_ep])
    assert not check.changed, check.diff


async def test_register_read_and_packet_read_of_the_slot_map_agree(switch) -> None:
    """The controller reads the lab switch's slot map with one RegisterEntry read; BMv2 only
    answers packet-outs. Both must give the same map (a switch restart's zeros included)."""
    from netmigrate.migration.switch_view import check_switch, read_slots, switch_session
    from netmigrate.p4rt import Keyspace, SlotEntry, SlotMapIO, read_slot_map_register

    await configure(switch.address)
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    written = {7: SlotEntry(SOURCE, TARGET), 8: SlotEntry(TARGET, 0), 16383: SlotEntry(0, TARGET)}
    slots = [0, 7, 8, 9, 16383]
    async with switch_session(endpoint) as session:
        ks = Keyspace(KEYSPACE, SERVICE_IP, SERVICE_PORT_BASE)
        await SlotMapIO(session, ks).write(written)
        facts = await check_switch(session, SWITCH_KEYSPACE, [SOURCE, TARGET])
        by_packets = await SlotMapIO(session, ks).read(slots)
        by_register = await read_slot_map_register(session, facts.slot_base, slots)
        assert by_register == by_packets
        assert by_register[7] == written[7] and by_register[9] == SlotEntry()
        fast = await read_slots(session, SWITCH_KEYSPACE, slots, facts=facts)
        assert fast == {s: (e.owner, e.target) for s, e in by_packets.items()}
        with pytest.raises(ValueError):
            await read_slot_map_register(session, facts.slot_base, [16384])


async def get_slots(control: str) -> control_pb2.GetSlotsResponse:
    async with grpc.aio.insecure_channel(control) as channel:
        stub = control_pb2_grpc.AgentControlStub(channel)
        return await stub.GetSlots(control_pb2.GetSlotsRequest(), timeout=5)


class ConnectionCounter:
    """Channels the controller opens, by address, and switch sessions opened: counted where
    gRPC channels and P4Runtime sessions are made, whatever code of the controller asks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.channels: Counter[str] = Counter()
        self.sessions = 0
        for name in ("insecure_channel", "secure_channel"):
            monkeypatch.setattr(grpc.aio, name, self._counting(getattr(grpc.aio, name)))
        real_open = P4RTSession.open

        async def open_session(session: P4RTSession, *args: Any, **kw: Any) -> None:
            self.sessions += 1
            await real_open(session, *args, **kw)

        monkeypatch.setattr(P4RTSession, "open", open_session)

    def _counting(self, make: Any) -> Any:
        def counted(target: str, *args: Any, **kw: Any) -> Any:
            # The in-process agents open channels to each other: count the controller's only.
            frames = traceback.extract_stack()
            if any("/netmigrate/migration/" in f.filename for f in frames):
                self.channels[target] += 1
            return make(target, *args, **kw)

        return counted


async def configure_agent_level(address: str, p: Any, *, default_owner: int) -> KeyspaceRef:
    """The switch's tables for the pair's keyspace as the agents reach it (the target's data
    address, where SLOT_START goes without a switch); the slot map is never consulted on the
    data path here, so the controller's checks and reads are what is exercised."""
    host, port = p.target.address
    table, clones = netmigrate_entries(
        lab_servers([SOURCE, TARGET]),
        keyspace_id=KEYSPACE,
        default_owner=default_owner,
        service_ip=host,
    )
    table = [
        dataclasses.replace(e, match={"hdr.ipv4.dstAddr": host, "hdr.udp.dstPort": port})
        if e.table.endswith(".keyspace")
        else e
        for e in table
    ]
    async with P4RTSession(address, device_id=1, election_id=5) as s:
        await install_pipeline(s, PipelineConfig.load(p4info_path(), DEVICE_CONFIG))
        await ensure_table_entries(s, table)
        await ensure_clone_sessions(s, clones)
    return KeyspaceRef(KEYSPACE, host, port)


async def counted_pair(
    switch: SwitchProcess, pair: Any, monkeypatch: pytest.MonkeyPatch, owner: int, keys: list
) -> tuple[Any, KeyspaceRef, ConnectionCounter]:
    """The pair (16 slots at the source, ``keys`` written there), the switch configured for it
    with default owner ``owner``, and a counter started after that."""
    p = await pair(initial_slots=frozenset(range(16)))
    keyspace = await configure_agent_level(switch.address, p, default_owner=owner)
    ra = p.redis_a.client()
    for k in keys:
        ra.set(k, b"v")
    return p, keyspace, ConnectionCounter(monkeypatch)


async def test_a_run_uses_one_channel_per_agent_and_one_switch_session(
    switch, pair, monkeypatch
) -> None:
    """Plan to finalize: readiness check, start, wait, the switch's slot map verified, the
    moved keys deleted, the final status read; each agent over one channel, the switch over
    one session (it used to be five channels to the source and two to four sessions)."""
    # The switch sends slot 3 to the target already, so finalize finds it agreeing.
    p, keyspace, counter = await counted_pair(switch, pair, monkeypatch, TARGET, keys_in(3, 7))
    result = await migration.run(
        p.source_ep,
        p.target_ep,
        [3],
        keyspace=keyspace,
        switch=SwitchEndpoint(switch.address, election_id=11),
        options=MigrationOptions(grace=0, poll=0.05),
    )
    assert result.state == "FINALIZED", result.message
    assert result.finalize is not None and result.finalize.switch_verified
    assert result.finalize.keys_deleted == 7
    # The switch session is a gRPC channel too.
    agents = {p.source_ep.control: 1, p.target_ep.control: 1}
    assert counter.channels == {**agents, switch.address: 1}
    assert counter.sessions == 1


async def test_runs_at_once_share_the_switch_session_instead_of_waiting(
    switch, pair, monkeypatch
) -> None:
    """A reconcile beside a running migration (same switch, same election id) uses the run's
    session and returns while the migration goes on."""
    p, keyspace, counter = await counted_pair(switch, pair, monkeypatch, SOURCE, keys_in(8, 300))
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    slow = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [8],
            keyspace=keyspace,
            switch=endpoint,
            finalize=False,
            options=MigrationOptions(batch=5, rate=100, grace=0, poll=0.05),
        )
    )
    try:
        await until(lambda: 8 in p.target.target._slots)
        check = await asyncio.wait_for(
            migration.reconcile(endpoint, keyspace, [p.source_ep, p.target_ep], check=True), 10
        )
        assert not slow.done()
        assert check.diff == {8: {"before": [SOURCE, 0], "after": [SOURCE, TARGET]}}
        assert counter.sessions == 1
    finally:
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow


async def test_a_finished_migration_run_again_verifies_the_switch_again(switch, pair) -> None:
    """What finalize verified holds in every result (migrate.yml asserts on it): a finished
    migration run again reads the switch again, and a switch that lost a moved slot since
    fails it, or with repair gets the slot written back."""
    await configure(switch.address)
    endpoint = SwitchEndpoint(switch.address, election_id=11)
    p = await pair(initial_slots=frozenset(range(16)))
    done = await migration.run(
        p.source_ep, p.target_ep, [3, 4], keyspace=p.keyspace, finalize=False,
        options=MigrationOptions(grace=0),
    )  # fmt: skip
    await migration.finalize(
        p.source_ep, p.target_ep, done.migration_id, keyspace=SWITCH_KEYSPACE,
        switch=endpoint, grace=0, repair=True,
    )  # fmt: skip

    def again(repair: bool):
        return migration.run(
            p.source_ep, p.target_ep, [3, 4], keyspace=SWITCH_KEYSPACE, switch=endpoint,
            migration_id=done.migration_id, options=MigrationOptions(grace=0, repair_switch=repair),
        )  # fmt: skip

    ok = await again(False)
    assert ok.state == "FINALIZED" and not ok.changed
    assert ok.finalize == FinalizeResult(switch_verified=True)

    # The switch restarted and lost slot 4 (its entry is the default owner, the source, again).
    async with P4RTSession(switch.address, device_id=1, election_id=5) as s:
        await restore_slot_map(
            s, Keyspace(KEYSPACE, SERVICE_IP, SERVICE_PORT_BASE), {4: SlotEntry()}
        )
    with pytest.raises(MigrationError, match="switch disagrees with the agents on 1 moved"):
        await again(False)
    fixed = await again(True)
    assert fixed.changed and fixed.finalize.slots_reconciled == 1
    assert fixed.finalize.switch_verified
    assert not (await again(False)).changed


async def test_reconcile_restores_the_agents_epochs_on_a_restarted_switch(switch, pair) -> None:
    """Issue #12.9: a restarted switch has every slot's epoch at 0 and would let any earlier
    migration's SLOT_START flip a slot again. reconcile writes the owners' epochs back, also
    for slots whose entry the restart left right, and a second reconcile changes nothing."""
    from netmigrate.p4rt import SlotMapIO

    p = await pair(relay=True, initial_slots=frozenset(range(16)))
    opts = MigrationOptions(grace=0, poll=0.05)
    # Agent level: slot 2 goes A -> B -> A (epochs 1, 2), slot 3 A -> B (epoch 1).
    await migration.run(p.source_ep, p.target_ep, [2, 3], keyspace=p.keyspace, options=opts)
    await migration.run(p.target_ep, p.source_ep, [2], keyspace=p.keyspace, options=opts)
    # Slot 5 stays in flight A -> B a moment (a slow copy): both sides report its move's epoch.
    ra = p.redis_a.client()
    for k in keys_in(5, 100):
        ra.set(k, b"v")
    slow = asyncio.create_task(
        migration.run(
            p.source_ep,
            p.target_ep,
            [5],
            keyspace=p.keyspace,
            options=MigrationOptions(batch=5, rate=100, grace=0, poll=0.05),
        )
    )
    await until(lambda: 5 in p.target.target._slots)
    source_view, target_view = [await get_slots(ep.control) for ep in (p.source_ep, p.target_ep)]
    assert [(m.role, m.epoch) for m in source_view.migrations if m.slot == 5] == [("out", 1)]
    assert [(m.role, m.epoch) for m in target_view.migrations if m.slot == 5] == [("in", 1)]
    # The persisted epochs, as ranges: A used 1 for slots 2, 3 and 5, and accepted 2 for slot 2.
    assert [(r.start, r.end, r.epoch) for r in source_view.epochs] == [
        (2, 2, 2),
        (3, 3, 1),
        (5, 5, 1),
    ]
    assert (await slow).state == "FINALIZED"

    agents = [p.source_ep, p.target_ep]
    ks = Keyspace(KEYSPACE, SERVICE_IP, SERVICE_PORT_BASE)

    async def reconciled(address: str) -> tuple[Any, Any, dict[int, SlotEntry]]:
        await configure(address)
        endpoint = SwitchEndpoint(address, election_id=11)
        would = await migration.reconcile(endpoint, SWITCH_KEYSPACE, agents, check=True)
        # Check mode counts the epoch-only slot too (what the slot_map module reports).
        assert (would.slots_to_write, would.slots_written, would.epochs_raised) == (3, 0, 3)
        first = await migration.reconcile(endpoint, SWITCH_KEYSPACE, agents)
        second = await migration.reconcile(endpoint, SWITCH_KEYSPACE, agents)
        async with P4RTSession(address, device_id=1, election_id=12) as s:
            return first, second, await SlotMapIO(s, ks).read([1, 2, 3, 5])

    before_restart = await reconciled(switch.address)
    switch.stop()
    with run_switch() as restarted:  # a new switch process: every register at 0
        after_restart = await reconciled(restarted.address)
    for first, second, entries in (before_restart, after_restart):
        # Slot 2's entry (owner A, the default) needs no write, only its epoch.
        assert first.changed and first.slots_written == 3 and first.epochs_raised == 3
        assert first.slots_to_write == 3
        assert first.diff == {
            3: {"before": [SOURCE, 0], "after": [TARGET, 0]},
            5: {"before": [SOURCE, 0], "after": [TARGET, 0]},
        }
        assert not second.changed and second.slots_written == 0 and second.epochs_raised == 0
        assert [(e.pair, e.epoch) for e in entries.values()] == [
            ((0, 0), 0),
            ((SOURCE, 0), 2),
            ((TARGET, 0), 1),
            ((TARGET, 0), 1),
        ]
