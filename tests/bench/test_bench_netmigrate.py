"""The NetMigrate row of ``netmigrate bench``: the real lab through the real harness.

The client's event counting is checked against a scripted UDP server (every kind, exactly);
the system itself runs once through :func:`run_system` on a lab of its own (namespaces
``nmt13-nmbt-*``, ephemeral P4Runtime and control ports), and everything it started must be
gone afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import redis

from netmigrate.bench import table
from netmigrate.bench.kv import CountingEvents, error_kind
from netmigrate.bench.peers.netmigrate import (
    BULK_CHUNK,
    LabClient,
    NetMigrateKV,
    NetMigrateSystem,
    _slot_chunks,
)
from netmigrate.bench.runner import RunConfig, run_system
from netmigrate.bench.system import SetupPlan, create_system
from netmigrate.bench.ycsb import key_name
from netmigrate.client.aio import EVENT_DOUBLE_READ, EVENT_TIMEOUT_RETRY, EVENT_TO_TARGET
from netmigrate.lab import netns as nx
from netmigrate.lab.stack import free_control_base, free_tcp_port
from netmigrate.lab.supervise import Supervisor
from netmigrate.protocol.codec import (
    ErrorReply,
    MGetReply,
    SetReply,
    ValueReply,
    decode_fields,
    encode_reply,
)
from netmigrate.protocol.constants import F_FLAGS, SLOT_COUNT, Flag, Status
from netmigrate.protocol.slot import key_slot

KS = 50000
#: Test lab namespaces (the bench command's own lab is ``nmbs``).
PREFIX = "nmt13-nmbt"


# --- the client's events, against a scripted server -----------------------------------------


def _answer(peer: Any, fields: tuple, addr: Any, body: Any, status: Status, flags: int) -> None:
    f = list(fields)
    f[F_FLAGS] = flags
    peer.send(encode_reply(tuple(f), int(status), body), addr)


async def _request(peer: Any) -> tuple[tuple, Any, Any]:
    data, addr = await peer.recv(2.0)
    fields, body = decode_fields(data)
    return fields, body, addr


@pytest.fixture
async def scripted(udp_peer):
    peer = await udp_peer()
    events = CountingEvents()
    client = LabClient(
        peer.address, KS, netns=None, events=events, timeout=0.1, retries=3, backoff=0.001
    )
    await client.open()
    try:
        yield NetMigrateKV(client), peer, events
    finally:
        client.close()


async def test_client_counts_each_event_it_handles_inside_a_call(scripted) -> None:
    kv, peer, events = scripted
    dr, to_target = int(Flag.DOUBLE_READ), int(Flag.TO_TARGET)

    # A read: first attempt lost (timeout), then WRONG_OWNER, then a double read whose target
    # copy is authoritative.
    task = asyncio.create_task(kv.get(b"k1"))
    await _request(peer)  # dropped
    fields, _, addr = await _request(peer)
    _answer(peer, fields, addr, ErrorReply(""), Status.WRONG_OWNER, fields[F_FLAGS])
    fields, _, addr = await _request(peer)
    _answer(peer, fields, addr, ValueReply(b"old"), Status.OK, dr)
    _answer(peer, fields, addr, ValueReply(b"new"), Status.OK, dr | to_target)
    assert await task == b"new"
    assert events.counts == {EVENT_TIMEOUT_RETRY: 1, "WRONG_OWNER": 1, EVENT_DOUBLE_READ: 1}

    # A write the switch redirected to the migration target, after the target said BUSY once.
    task = asyncio.create_task(kv.set(b"k2", b"v"))
    fields, _, addr = await _request(peer)
    _answer(peer, fields, addr, ErrorReply(""), Status.BUSY, to_target)
    fields, _, addr = await _request(peer)
    _answer(peer, fields, addr, SetReply(True), Status.OK, to_target)
    await task
    assert events.counts == {
        EVENT_TIMEOUT_RETRY: 1,
        "WRONG_OWNER": 1,
        EVENT_DOUBLE_READ: 1,
        "BUSY": 1,
        EVENT_TO_TARGET: 2,
    }

    # A late duplicate of an answered request is no event.
    _answer(peer, fields, addr, SetReply(True), Status.OK, to_target)
    await asyncio.sleep(0.05)
    assert sum(events.counts.values()) == 6


async def test_failures_are_labelled_by_status(scripted) -> None:
    kv, peer, events = scripted
    task = asyncio.create_task(kv.set(b"k", b"v"))
    fields, _, addr = await _request(peer)
    _answer(peer, fields, addr, ErrorReply("redis down"), Status.ERROR, 0)
    with pytest.raises(Exception) as info:
        await task
    assert error_kind(info.value) == "ERROR"
    assert "redis down" in str(info.value)

    # WRONG_OWNER until the retries are used up: three retries are events, the end an error.
    task = asyncio.create_task(kv.get(b"k"))
    for _ in range(4):
        fields, _, addr = await _request(peer)
        _answer(peer, fields, addr, ErrorReply(""), Status.WRONG_OWNER, 0)
    with pytest.raises(Exception) as info:
        await task
    assert error_kind(info.value) == "WRONG_OWNER"
    assert events.counts == {"WRONG_OWNER": 3}


async def test_bulk_calls_keep_order_across_slot_chunks(scripted) -> None:
    kv, peer, _ = scripted
    keys = [key_name(k) for k in range(1000)]
    assert len({key_slot(k) for k in keys}) > 2 * BULK_CHUNK  # several chunks
    chunks = _slot_chunks(keys, key=lambda k: k)
    assert len(chunks) >= 3 and [k for c in chunks for k in c] == keys
    assert all(len({key_slot(k) for k in c}) <= BULK_CHUNK for c in chunks)

    async def serve() -> None:
        while True:
            fields, body, addr = await _request(peer)
            values = tuple(b"v:" + k for k in body.keys)
            peer.send(encode_reply(fields, int(Status.OK), MGetReply(values)), addr)

    server = asyncio.create_task(serve())
    try:
        assert await kv.get_many(keys) == [b"v:" + k for k in keys]
    finally:
        server.cancel()


def test_bad_migration_options_are_refused_before_anything_starts(tmp_path: Path, capsys) -> None:
    from netmigrate.cli import main

    system = create_system("netmigrate")
    for bad in ({"netmigrate_parallel": 300}, {"netmigrate_batch": 70000}):
        with pytest.raises(ValueError):
            system.validate_options(bad)
    system.validate_options({"netmigrate_parallel": None, "netmigrate_rate": 1000})
    out = tmp_path / "out"
    argv = ["bench", "run", "--system", "netmigrate", "--netmigrate-parallel", "257"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "parallel must be 1..256" in capsys.readouterr().err
    assert not out.exists()


# --- the real system ---------------------------------------------------------------------------


class InspectedNetMigrate(NetMigrateSystem):
    """Records where slots and keys really are just before the lab goes down."""

    facts: dict[str, Any]

    def __init__(self, moved: set[int], **kw: Any) -> None:
        super().__init__(**kw)
        self.moved = moved
        self.facts = {}

    async def teardown(self) -> None:
        stack = self.stack
        if stack is not None and not self.facts:
            sup = Supervisor(stack.run_dir)
            self.facts["pids"] = [p for n in sup.names() if (p := sup.status(n).pid)]
            self.facts["run_dir"] = Path(stack.run_dir)
            self.facts["owners"] = await self.slot_owners()
            counts = {}
            for server in stack.servers:
                r = redis.Redis(unix_socket_path=server.redis_socket)
                try:
                    counts[server.name] = sum(
                        r.execute_command("CLUSTER", "COUNTKEYSINSLOT", s) for s in self.moved
                    )
                finally:
                    r.close()
            self.facts["keys_in_moved_slots"] = counts
        await super().teardown()


async def test_netmigrate_through_the_harness() -> None:
    records = 5000
    cfg = RunConfig(
        workload="A", records=records, value_size=100, concurrency=8, duration_s=5.0,
        migrate_at_s=1.5, min_after_s=1.0, migrate_fraction=400 / SLOT_COUNT,
        options={"netmigrate_parallel": 32, "netmigrate_grace": 0.2},
    )  # fmt: skip
    moved = set(cfg.slots())
    prefix = f"{PREFIX}{secrets.token_hex(1)}"
    system = InspectedNetMigrate(
        moved, prefix=prefix, grpc_port=free_tcp_port(), control_base=free_control_base()
    )
    run = await run_system(system, cfg)

    # The run: correct, no client error, the migration finished and was finalized.
    mig = run["migration"]
    assert mig["error"] is None
    assert run["verification"]["ok"], run["verification"]
    assert run["verification"]["lost_writes"] == 0
    assert run["totals"]["error_count"] == 0, run["totals"]["errors"]
    assert mig["slots_moved"] == len(moved) == 400
    expected_keys = sum(key_slot(key_name(k)) in moved for k in range(records))
    assert mig["keys_moved"] >= expected_keys > 0
    details = mig["details"]
    assert details["state"] == "FINALIZED"
    assert details["options"]["parallel"] == 32 and details["options"]["grace_s"] == 0.2
    assert details["finalize"]["switch_verified"] is True
    # "finished" came after finalize, which waits the grace before deleting at the source.
    assert details["finalize_s"] >= 0.2
    assert mig["duration_s"] >= details["agent_s"] + details["finalize_s"] > 0
    assert details["finalize"]["slots_finalized"] == 400
    assert details["finalize"]["keys_deleted"] == expected_keys  # A neither inserts nor deletes

    # Where things are now: moved slots and their keys on the target, the rest on the source.
    facts = system.facts
    owners = facts["owners"]
    assert all(owners[s] == "redis2" for s in moved)
    assert all(owners[s] == "redis1" for s in range(SLOT_COUNT) if s not in moved)
    keys = facts["keys_in_moved_slots"]
    assert keys["redis1"] == 0
    assert keys["redis2"] >= expected_keys
    assert run["keys_per_node_after"]["redis2"] >= expected_keys
    assert run["keys_per_node_before"]["redis1"] >= records

    # Client events never exceed what the servers saw: a double read or redirected request
    # reached the target agent; a WRONG_OWNER retry was a WRONG_OWNER reply of some agent.
    events = run["totals"]["client_events"]
    counters = run["server_counters"]
    target_requests = counters.get("redis2_requests_GET", 0) + counters.get(
        "redis2_requests_SET", 0
    )
    assert target_requests > 0  # after the move the target serves the moved slots
    assert events.get(EVENT_DOUBLE_READ, 0) + events.get(EVENT_TO_TARGET, 0) <= target_requests
    wrong_owner = sum(counters.get(f"{n}_replies_WRONG_OWNER", 0) for n in ("redis1", "redis2"))
    assert events.get("WRONG_OWNER", 0) <= wrong_owner
    assert counters["cpu_ms_switch"] > 0

    # The report row the table shows.
    row = table.row(run)
    assert row["system"] == "netmigrate" and row["verified"] == "ok"
    assert float(row["thr during/before"]) > 0
    assert int(row["keys/s"].replace(",", "")) > 0
    assert run["ratios"]["throughput_during_before"] > 0

    # Nothing of the lab is left.
    assert not any(ns.startswith(prefix) for ns in nx.list_netns())
    assert not facts["run_dir"].exists()
    for pid in facts["pids"]:
        assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


async def test_failed_setup_leaves_nothing_and_teardown_is_idempotent() -> None:
    prefix = f"{PREFIX}{secrets.token_hex(1)}"
    # The P4Runtime port is taken: the lab switch cannot start, setup fails.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        system = NetMigrateSystem(
            prefix=prefix, grpc_port=blocker.getsockname()[1], control_base=free_control_base()
        )
        with pytest.raises(Exception, match="P4Runtime"):
            await system.setup(SetupPlan(10, 100, (0,)))
    assert system.stack is None
    assert not any(ns.startswith(prefix) for ns in nx.list_netns())
    await system.teardown()
    await system.teardown()
    assert not Path(f"/run/netmigrate-lab/{prefix}").exists()
