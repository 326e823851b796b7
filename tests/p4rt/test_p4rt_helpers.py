"""The controller-side P4Runtime helpers against the real lab switch process: sessions and
arbitration, idempotent pipeline install, entries and clone sessions with diffs, counters,
digests, slot map through packet-out/packet-in over a whole keyspace, errors, TLS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from finsy.proto import p4r
from support.pki import make_pki

from netmigrate.lab.forwarding import DEVICE_CONFIG, SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import SwitchProcess, run_switch
from netmigrate.p4rt import (
    CloneSessionSpec,
    Keyspace,
    NoPipelineError,
    NotPrimaryError,
    P4RTSession,
    PipelineConfig,
    PipelineMismatchError,
    SlotEntry,
    SlotMapIO,
    SwitchUnreachableError,
    TableEntrySpec,
    TlsOptions,
    WriteError,
    current_cookie,
    enable_digest,
    ensure_clone_sessions,
    ensure_table_entries,
    follow_digests,
    install_pipeline,
    read_counters,
    read_slot_map,
    restore_slot_map,
)
from netmigrate.p4rt.frames import udp_frame
from netmigrate.p4rt.slotmap import SUBMIT_TO_INGRESS
from netmigrate.protocol.codec import Control, Header, encode
from netmigrate.protocol.constants import SERVICE_PORT_BASE, SLOT_COUNT, Decision, Op
from netmigrate.resources import p4info_path

KEYSPACE = Keyspace(1, SERVICE_IP, SERVICE_PORT_BASE)
SERVERS = lab_servers([1, 2, 3])


@pytest.fixture
def switch() -> Iterator[SwitchProcess]:
    with run_switch() as sw:
        yield sw


def config(device_config: bytes = DEVICE_CONFIG) -> PipelineConfig:
    return PipelineConfig.load(p4info_path(), device_config)


async def ready_session(address: str, **kw) -> P4RTSession:
    s = P4RTSession(address, device_id=1, election_id=kw.pop("election_id", 10), **kw)
    await s.open()
    await install_pipeline(s, config())
    return s


async def install_netmigrate(s: P4RTSession) -> None:
    entries, clones = netmigrate_entries(SERVERS, default_owner=1, cpu_senders=True)
    await ensure_table_entries(s, entries)
    await ensure_clone_sessions(s, clones)


async def test_arbitration_and_not_primary(switch):
    async with P4RTSession(switch.address, election_id=10) as primary:
        assert primary.is_primary
        with pytest.raises(NotPrimaryError) as info:
            await P4RTSession(switch.address, election_id=5).open()
        assert "another controller is primary (election id 10)" in str(info.value)
        await install_pipeline(primary, config())
        backup = P4RTSession(switch.address, election_id=5)
        await backup.open(require_primary=False)
        try:
            assert not backup.is_primary
            assert backup.has_schema  # adopted from the switch
            with pytest.raises(NotPrimaryError) as winfo:
                await ensure_table_entries(
                    backup, [TableEntrySpec("ipv4_lpm", {"dstAddr": "10.0.0.0/8"}, "drop")]
                )
            assert winfo.value.code == "PERMISSION_DENIED"
        finally:
            await backup.close()
    # The primary is gone: a new session with a lower id claims the switch (take over).
    async with P4RTSession(switch.address, election_id=3) as again:
        assert again.is_primary and again.election_id == 10


async def test_unreachable_switch_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    with pytest.raises(SwitchUnreachableError) as info:
        await P4RTSession(f"127.0.0.1:{port}", timeout=3).open()
    assert f"no P4Runtime server answers at 127.0.0.1:{port}" in str(info.value)
    assert info.value.code == "UNAVAILABLE"


async def test_wrong_device_id(switch):
    with pytest.raises(Exception) as info:
        await P4RTSession(switch.address, device_id=0).open()
    assert "unknown device id 0" in str(info.value)


async def test_install_pipeline_idempotent_by_cookie(switch):
    async with P4RTSession(switch.address, election_id=10) as s:
        assert await current_cookie(s) is None
        with pytest.raises(NoPipelineError):
            await ensure_table_entries(s, [])  # no P4Info known and no pipeline
        cfg = config()
        checked = await install_pipeline(s, cfg, check_mode=True)
        assert checked.changed and checked.verified
        assert await current_cookie(s) is None  # check mode changed nothing
        first = await install_pipeline(s, cfg)
        assert first.changed and first.previous_cookie is None
        assert await current_cookie(s) == cfg.cookie
        again = await install_pipeline(s, cfg)
        assert not again.changed and again.previous_cookie == cfg.cookie
        other = config(b"another device config")
        assert other.cookie != cfg.cookie
        changed = await install_pipeline(s, other)
        assert changed.changed and changed.previous_cookie == cfg.cookie


async def test_wrong_p4info_is_a_pipeline_mismatch(switch):
    cfg = config()
    info = type(cfg.p4info)()
    info.CopyFrom(cfg.p4info)
    info.registers[0].size = 1024
    async with P4RTSession(switch.address, election_id=10) as s:
        for check_mode in (True, False):
            with pytest.raises(PipelineMismatchError) as exc:
                await install_pipeline(
                    s, PipelineConfig.load(info, DEVICE_CONFIG), check_mode=check_mode
                )
            assert "registers['NetMigrateIngress.slot_map'].size is 1024, expected 65536" in str(
                exc.value
            )
            assert exc.value.code == "INVALID_ARGUMENT"


async def test_ensure_table_entries_diff_and_idempotence(switch):
    s = await ready_session(switch.address)
    try:
        want = [
            TableEntrySpec(
                "NetMigrateIngress.server_port",
                {"meta.dest_server": 1},
                "set_server_port",
                {"port": 1},
            ),
            TableEntrySpec(
                "ipv4_lpm",
                {"dstAddr": "10.1.0.0/16"},
                "ipv4_forward",
                {"dst_mac": "02:00:00:00:00:01", "port": 2},
            ),
            TableEntrySpec(
                "ipv4_lpm", default=True, action="ipv4_forward", params={"dst_mac": 5, "port": 3}
            ),
        ]
        dry = await ensure_table_entries(s, want, check_mode=True)
        assert dry.changed and len(dry.inserted) == 2 and len(dry.modified) == 1
        assert (await ensure_table_entries(s, want, check_mode=True)).changed  # nothing written
        first = await ensure_table_entries(s, want)
        assert first.changed
        assert first.inserted[0] == {
            "table": "NetMigrateIngress.server_port",
            "match": {"meta.dest_server": 1},
            "action": "NetMigrateIngress.set_server_port",
            "params": {"port": 1},
        }
        second = await ensure_table_entries(s, want)
        assert not second.changed and second.unchanged == 3
        # Change one parameter: a MODIFY with before/after.
        want[0] = TableEntrySpec(
            "NetMigrateIngress.server_port", {"meta.dest_server": 1}, "set_server_port", {"port": 9}
        )
        third = await ensure_table_entries(s, want)
        assert [m["params"] for m in third.modified] == [{"port": 9}]
        assert third.before[0]["params"] == {"port": 1}
        # Purge: only the wanted entries stay in the named tables.
        extra = TableEntrySpec("ipv4_lpm", {"dstAddr": "10.2.0.0/16"}, "drop")
        await ensure_table_entries(s, [extra])
        purged = await ensure_table_entries(s, want, purge=True)
        assert [d["match"] for d in purged.deleted] == [{"hdr.ipv4.dstAddr": [0x0A020000, 16]}]
        # Absent.
        gone = await ensure_table_entries(s, want[:2], present=False)
        assert len(gone.deleted) == 2
        assert not (await ensure_table_entries(s, want[:2], present=False)).changed
        # A bad entry is refused by the switch with per-update details.
        bad = TableEntrySpec(
            "NetMigrateIngress.server_port", {"meta.dest_server": 2}, "unknown_server"
        )
        with pytest.raises(WriteError) as info:
            await ensure_table_entries(s, [bad])
        assert info.value.details[0].code == "PERMISSION_DENIED"
        assert "@defaultonly" in str(info.value)
    finally:
        await s.close()


async def test_ensure_clone_sessions(switch):
    s = await ready_session(switch.address)
    try:
        want = [CloneSessionSpec.to_port(1, 1), CloneSessionSpec.to_port(2, 2)]
        r = await ensure_clone_sessions(s, want)
        assert r.changed and r.inserted == [1, 2]
        assert not (await ensure_clone_sessions(s, want)).changed
        r = await ensure_clone_sessions(s, [CloneSessionSpec.to_port(2, 3)])
        assert r.modified == [2] and r.before[0]["replicas"] == [[2, 0]]
        r = await ensure_clone_sessions(s, [CloneSessionSpec(1)], present=False)
        assert r.deleted == [1]
    finally:
        await s.close()


async def test_slot_map_full_keyspace_roundtrip_and_counters(switch):
    s = await ready_session(switch.address)
    try:
        await install_netmigrate(s)
        initial = await read_slot_map(s, KEYSPACE, range(0, SLOT_COUNT, 97))
        assert set(initial.values()) == {SlotEntry(0, 0)}
        wanted = {slot: SlotEntry(1 + slot % 3, (slot * 7) % 4) for slot in range(SLOT_COUNT)}
        wanted = {
            k: (v if v.owner != v.target else SlotEntry(v.owner, 0)) for k, v in wanted.items()
        }
        written = await restore_slot_map(s, KEYSPACE, wanted)
        assert written == wanted
        io = SlotMapIO(s, KEYSPACE, window=512)
        assert await io.read() == wanted
        assert await io.read([5, 6]) == {5: wanted[5], 6: wanted[6]}
        # Every SLOT_SET and SLOT_READ was one CPU_OP decision.
        decisions = await read_counters(s, "decision_counter")
        reads = len(range(0, SLOT_COUNT, 97))
        assert decisions[Decision.CPU_OP].packets == 2 * SLOT_COUNT + reads + 2 + io.resent
        ops = await read_counters(s, "op_counter", [Op.SLOT_SET, Op.SLOT_READ])
        assert ops[Op.SLOT_SET].packets == SLOT_COUNT
    finally:
        await s.close()


async def test_slot_map_without_keyspace_entry_times_out_clearly(switch):
    s = await ready_session(switch.address)
    try:
        io = SlotMapIO(s, KEYSPACE, timeout=0.05, attempts=2)
        with pytest.raises(Exception) as info:
            await io.read([1])
        assert "no answer for slot 1 after 2 attempts" in str(info.value)
        assert "keyspace entry" in str(info.value)
    finally:
        await s.close()


async def test_follow_digests_acknowledges(switch):
    s = await ready_session(switch.address)
    try:
        await install_netmigrate(s)

        def frame(op: Op, slot: int, source: int, target: int, epoch: int) -> bytes:
            h = Header(
                op=op, request_id=1, keyspace=1, slot=slot, source_id=source, target_id=target
            )
            src = f"10.9.0.{source}"
            return udp_frame(
                encode(h, Control(epoch)),
                dst_ip=SERVICE_IP,
                dst_port=SERVICE_PORT_BASE,
                src_ip=src,
            )

        lists = follow_digests(s, "slot_transition_t", ack_timeout_ns=60 * 10**9)
        first_task = asyncio.ensure_future(anext(lists))
        await asyncio.sleep(0.2)  # the digest is enabled
        await s.packet_out(frame(Op.SLOT_START, 100, 1, 2, epoch=1), SUBMIT_TO_INGRESS)
        first = await asyncio.wait_for(first_task, 5)
        assert first.messages == (
            {"keyspace": 1, "slot": 100, "op": int(Op.SLOT_START), "owner": 1, "target": 2},
        )
        # Asking for the next list acknowledges the first: the same data comes again.
        second_task = asyncio.ensure_future(anext(lists))
        await asyncio.sleep(0.2)
        await restore_slot_map(s, KEYSPACE, {100: SlotEntry(0, 0)})
        # A new migration of the slot: a higher epoch (the restore does not lower the switch's).
        await s.packet_out(frame(Op.SLOT_START, 100, 1, 2, epoch=2), SUBMIT_TO_INGRESS)
        second = await asyncio.wait_for(second_task, 5)
        assert second.messages == first.messages and second.list_id > first.list_id
        await lists.aclose()
    finally:
        await s.close()


async def test_session_over_mutual_tls(tmp_path):
    pki = make_pki(tmp_path)
    args = (
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-ca", str(pki.ca)),
    )
    with run_switch(*args) as sw:
        tls = TlsOptions(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        async with P4RTSession(sw.address, tls=tls) as s:
            assert (await install_pipeline(s, config())).changed
        with pytest.raises(SwitchUnreachableError):
            await P4RTSession(sw.address, tls=TlsOptions(ca=pki.ca), timeout=3).open()


async def test_session_over_mutual_tls_on_a_unix_socket(tmp_path):
    # gRPC checks a unix socket's path against the certificate; the session checks localhost.
    pki = make_pki(tmp_path, server_names=("localhost",))
    args = (
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-ca", str(pki.ca)),
    )
    with run_switch(*args, grpc_addr=f"unix:{tmp_path}/p4runtime.sock") as sw:
        tls = TlsOptions(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        async with P4RTSession(sw.address, tls=tls, timeout=5) as s:
            assert s.is_primary


async def test_enable_digest_twice_reconfigures(switch):
    s = await ready_session(switch.address)
    try:
        first = await enable_digest(s, "slot_transition_t", max_list_size=4)
        again = await enable_digest(s, "slot_transition_t", max_list_size=8)
        assert first == again == s.schema.digests["slot_transition_t"].id
        [entry] = await s.read([p4r.Entity(digest_entry=p4r.DigestEntry(digest_id=first))])
        assert entry.digest_entry.config.max_list_size == 8
    finally:
        await s.close()


async def test_concurrent_packet_outs_share_the_stream_safely(switch):
    # finsy does not serialise stream writes; overlapping writes used to fail with INTERNAL.
    s = await ready_session(switch.address)
    try:
        await install_netmigrate(s)
        slots = range(200)
        written = {slot: SlotEntry(2, 0) for slot in slots}
        await asyncio.gather(*(restore_slot_map(s, KEYSPACE, {k: v}) for k, v in written.items()))
        assert await read_slot_map(s, KEYSPACE, slots) == written
    finally:
        await s.close()
