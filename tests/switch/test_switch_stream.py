"""StreamChannel of the real lab switch through finsy: packet-in goes to the primary only, a
backup's packet-out is refused, digests are sent, de-duplicated until acknowledged, batched;
and TLS / mutual TLS / unix socket transports."""

from __future__ import annotations

import asyncio

import finsy as fy
import pytest
from finsy.grpcutil import GRPCCredentialsTLS
from finsy.p4client import P4Client, P4ClientError
from finsy.proto import p4r
from support.p4rt_clients import finsy_options, primary_options
from support.pki import make_pki

from netmigrate.lab.forwarding import SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import run_switch
from netmigrate.p4rt.frames import udp_frame, udp_payload
from netmigrate.protocol.codec import Control, Header, decode_header, encode
from netmigrate.protocol.constants import SERVICE_PORT_BASE, Op

SERVERS = lab_servers([1, 2, 3])
DIGEST = "slot_transition_t"


def control_frame(
    op: Op, slot: int, source: int, target: int, rid: int = 1, epoch: int = 1
) -> bytes:
    header = Header(
        op=op, request_id=rid, keyspace=1, slot=slot, source_id=source, target_id=target
    )
    return udp_frame(
        encode(header, Control(epoch)),
        dst_ip=SERVICE_IP,
        dst_port=SERVICE_PORT_BASE,
        src_ip=f"10.9.0.{source}",
    )


def to_ingress(frame: bytes) -> fy.P4PacketOut:
    return fy.P4PacketOut(frame, egress_port=0, submit_to_ingress=1, _pad=0)


async def install(sw: fy.Switch) -> None:
    entries, _ = netmigrate_entries(SERVERS, default_owner=1, cpu_senders=True)
    await sw.insert([e.finsy_entry() for e in entries])


async def started(aiter) -> asyncio.Future:
    """Start waiting for the first item (finsy registers its queue on the first step)."""
    fut = asyncio.ensure_future(anext(aiter))
    await asyncio.sleep(0)
    return fut


async def test_packet_in_to_primary_only_and_backup_packet_out_refused(switch):
    async with fy.Switch("a", switch.address, primary_options()) as a:
        await install(a)
        async with fy.Switch("b", switch.address, finsy_options(initial_election_id=3)) as b:
            errors: list[p4r.StreamMessageResponse] = []
            b.ee.on(fy.SwitchEvent.STREAM_ERROR, lambda _sw, msg: errors.append(msg))
            a_in = await started(a.read_packets())
            b_in = await started(b.read_packets())
            await a.write([to_ingress(control_frame(Op.SLOT_READ, 3, 0, 0, rid=11))])
            pin = await asyncio.wait_for(a_in, 5)
            assert decode_header(udp_payload(pin.payload)).request_id == 11
            await asyncio.sleep(0.2)
            assert not b_in.done()
            # The backup's packet-out is dropped with a StreamError.
            await b.write([to_ingress(control_frame(Op.SLOT_SET, 3, 2, 0, rid=12))])
            for _ in range(50):
                if errors:
                    break
                await asyncio.sleep(0.02)
            assert errors and errors[0].error.canonical_code == 7  # PERMISSION_DENIED
            assert errors[0].error.WhichOneof("details") == "packet_out"
            [cell] = [c async for c in a.read(fy.P4RegisterEntry("slot_map", index=3))]
            assert cell.data == 0  # not written
            b_in.cancel()


async def test_digest_lists_dedup_and_acks(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await install(sw)
        await sw.insert(
            [fy.P4DigestEntry(DIGEST, max_list_size=1, max_timeout_ns=0, ack_timeout_ns=10**11)]
        )
        [cfg] = [e async for e in sw.read(fy.P4DigestEntry(DIGEST))]
        assert cfg.ack_timeout_ns == 10**11
        digests = sw.read_digests(DIGEST)
        nxt = await started(digests)
        await sw.write([to_ingress(control_frame(Op.SLOT_START, 5, 1, 2))])
        first = await asyncio.wait_for(nxt, 5)
        expected = {"keyspace": 1, "slot": 5, "op": int(Op.SLOT_START), "owner": 1, "target": 2}
        assert list(first) == [expected]

        # Reset the slot and start it again: same digest data, not acknowledged -> suppressed.
        await sw.write([to_ingress(control_frame(Op.SLOT_SET, 5, 0, 0))])
        nxt = await started(digests)
        # A new migration of the slot: a higher epoch (SLOT_SET does not lower the switch's).
        await sw.write([to_ingress(control_frame(Op.SLOT_START, 5, 1, 2, epoch=2))])
        await asyncio.sleep(0.3)
        assert not nxt.done()
        [cell] = [c async for c in sw.read(fy.P4RegisterEntry("slot_map", index=5))]
        assert cell.data == 0x0002  # the START itself was applied

        # After the ack the same data is news again.
        await sw.write([first.ack()])
        await sw.write([to_ingress(control_frame(Op.SLOT_SET, 5, 0, 0))])
        await sw.write([to_ingress(control_frame(Op.SLOT_START, 5, 1, 2, epoch=3))])
        second = await asyncio.wait_for(nxt, 5)
        assert list(second) == [expected]
        assert second.list_id != first.list_id


async def test_digest_batching_by_size_and_timeout(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await install(sw)
        await sw.insert(
            [
                fy.P4DigestEntry(
                    DIGEST, max_list_size=3, max_timeout_ns=200_000_000, ack_timeout_ns=0
                )
            ]
        )
        digests = sw.read_digests(DIGEST)
        nxt = await started(digests)
        await sw.write([to_ingress(control_frame(Op.SLOT_START, s, 1, 2)) for s in (20, 21, 22)])
        full = await asyncio.wait_for(nxt, 5)
        assert [m["slot"] for m in full] == [20, 21, 22]
        # Two messages wait for max_timeout_ns, then leave together.
        nxt = await started(digests)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sw.write([to_ingress(control_frame(Op.SLOT_START, s, 1, 3)) for s in (30, 31)])
        partial = await asyncio.wait_for(nxt, 5)
        assert [m["slot"] for m in partial] == [30, 31]
        assert loop.time() - t0 >= 0.15
        # Disabled digests produce nothing.
        await sw.delete([fy.P4DigestEntry(DIGEST)])
        nxt = await started(digests)
        await sw.write([to_ingress(control_frame(Op.SLOT_START, 40, 1, 2))])
        await asyncio.sleep(0.3)
        assert not nxt.done()
        nxt.cancel()


async def test_unix_socket_address(tmp_path):
    path = tmp_path / "p4rt.sock"
    with run_switch(grpc_addr=f"unix:{path}") as sw_proc:
        assert sw_proc.address == f"unix:{path}"
        async with fy.Switch("a", sw_proc.address, primary_options()) as sw:
            assert sw.is_primary
            assert [e async for e in sw.read(fy.P4TableEntry())] == []


async def _capabilities(address: str, creds: GRPCCredentialsTLS | None) -> str:
    client = P4Client(address, creds, wait_for_ready=False)
    await client.open()
    try:
        reply = await client.request(p4r.CapabilitiesRequest())
        return reply.p4runtime_api_version
    finally:
        await client.close()


async def test_tls(tmp_path):
    pki = make_pki(tmp_path)
    args = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    with run_switch(*args) as sw_proc:
        creds = GRPCCredentialsTLS(cacert=pki.ca, cert=None, private_key=None)
        async with fy.Switch(
            "a", sw_proc.address, primary_options(channel_credentials=creds)
        ) as sw:
            await sw.insert(
                [fy.P4CloneSessionEntry(1, replicas=[(1, 0)])]
            )  # a write over TLS works
        with pytest.raises(P4ClientError) as info:
            await _capabilities(sw_proc.address, None)  # plaintext client
        assert info.value.code.name == "UNAVAILABLE"
        assert "BEGIN" not in sw_proc.log()  # the key never reaches the log


async def test_mutual_tls(tmp_path):
    pki = make_pki(tmp_path)
    args = (
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-ca", str(pki.ca)),
    )
    with run_switch(*args) as sw_proc:
        good = GRPCCredentialsTLS(cacert=pki.ca, cert=pki.client_cert, private_key=pki.client_key)
        assert (await _capabilities(sw_proc.address, good)).startswith("1.")
        for creds in (
            GRPCCredentialsTLS(cacert=pki.ca, cert=None, private_key=None),
            GRPCCredentialsTLS(cacert=pki.ca, cert=pki.rogue_cert, private_key=pki.rogue_key),
        ):
            with pytest.raises(P4ClientError) as info:
                await _capabilities(sw_proc.address, creds)
            assert info.value.code.name == "UNAVAILABLE"


def test_tls_key_that_is_not_pem_is_refused(tmp_path):
    import subprocess

    from netmigrate.lab.switch_process import switch_argv

    pki = make_pki(tmp_path)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    res = subprocess.run(
        switch_argv(
            *("--grpc-addr", "127.0.0.1:0"),
            *("--tls-cert", str(pki.server_cert), "--tls-key", str(bad)),
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "is not PEM" in res.stderr
