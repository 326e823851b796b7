"""The lab switch's data plane with real veth ports in ``nmt3-`` namespaces: forwarding
through the pipeline, packet-out/packet-in, its own transmissions ignored, fault injection
(drop, delay without reordering) at start and at run time, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import subprocess
import time

import finsy as fy
import pytest
from support.frames import recv_matching
from support.p4rt_clients import primary_options

from netmigrate.lab.forwarding import SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import run_switch, switch_argv
from netmigrate.lab.veth_topology import host_socket
from netmigrate.p4rt.frames import udp_frame, udp_payload
from netmigrate.protocol.codec import Control, Get, Header, decode_header, encode, encode_request
from netmigrate.protocol.constants import (
    PACKET_IN_REASON_SLOT_MAP,
    REPLY_BIT,
    SERVICE_PORT_BASE,
    Op,
)
from netmigrate.switch.control import ControlClient, ControlError

SERVERS = lab_servers([1, 2])


async def install(sw: fy.Switch, *, default_owner: int = 2) -> None:
    entries, clones = netmigrate_entries(SERVERS, default_owner=default_owner, cpu_senders=True)
    await sw.insert([e.finsy_entry() for e in entries])
    await sw.insert(
        [fy.P4CloneSessionEntry(c.session_id, replicas=list(c.replicas)) for c in clones]
    )


def get_frame(request_id: int, slot: int = 7, src_ip: str = "10.9.0.1") -> bytes:
    payload = encode_request(Op.GET, request_id, 1, slot, Get(b"key"))
    return udp_frame(payload, dst_ip=SERVICE_IP, dst_port=SERVICE_PORT_BASE, src_ip=src_ip,
                     src_port=40000)  # fmt: skip


def request_id_of(frame: bytes) -> int | None:
    payload = udp_payload(frame)
    if payload is None or len(payload) < 18:
        return None
    try:
        return decode_header(payload).request_id
    except ValueError:
        return None


async def test_get_is_steered_to_the_owner(switch_with_ports):
    sw_proc, topo = switch_with_ports
    h1 = host_socket(topo.hosts[1])
    h2 = host_socket(topo.hosts[2])
    try:
        async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
            await install(sw, default_owner=2)
            h1.send(get_frame(0x1234))
            frame = await asyncio.to_thread(recv_matching, h2, lambda f: request_id_of(f) == 0x1234)
            assert frame is not None, sw_proc.log()
            server = SERVERS[1]
            assert int.from_bytes(frame[0:6], "big") == server.mac
            assert frame[14 + 16 : 14 + 20] == ipaddress.IPv4Address(server.ip).packed
            assert int.from_bytes(frame[14 + 22 : 14 + 24], "big") == server.udp_port
            assert frame[14 + 8] == 63  # TTL decremented
            counters = {
                c.index: c.data.packet_count
                async for c in sw.read(fy.P4CounterEntry("decision_counter"))
            }
            assert counters[1] == 1  # Decision.TO_OWNER
    finally:
        h1.close()
        h2.close()


async def test_plain_sockets_without_rings_forward_too(topo):
    with run_switch(*topo.port_args(), "--no-rings", control=True) as sw_proc:
        h1 = host_socket(topo.hosts[1])
        h2 = host_socket(topo.hosts[2])
        try:
            async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
                await install(sw, default_owner=2)
                got = await asyncio.to_thread(_frames_through, h1, h2, list(range(50, 60)))
                assert [rid for rid, _ in got] == list(range(50, 60))
            stats = ControlClient(sw_proc.control_socket).stats()
            assert stats["ports"]["1"]["rings"] is False
            assert stats["ports"]["2"]["tx"] == 10
        finally:
            h1.close()
            h2.close()


async def test_packet_out_reaches_the_port_and_switch_ignores_its_own_frames(switch_with_ports):
    sw_proc, topo = switch_with_ports
    h2 = host_socket(topo.hosts[2])
    try:
        async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
            payload = udp_frame(b"hello from the controller", dst_ip="10.9.0.2", dst_port=9)
            await sw.write([fy.P4PacketOut(payload, egress_port=2, submit_to_ingress=0, _pad=0)])
            frame = await asyncio.to_thread(recv_matching, h2, lambda f: f == payload)
            assert frame == payload
        stats = ControlClient(sw_proc.control_socket).stats()
        assert stats["ports"]["2"]["rings"] is True
        assert stats["ports"]["2"]["tx"] == 1
        # PACKET_IGNORE_OUTGOING: the frame the switch sent is not read back as ingress.
        assert stats["ports"]["2"]["rx"] == 0
        assert stats["packet_outs"] == 1
    finally:
        h2.close()


async def test_slot_read_answers_with_a_packet_in(switch_with_ports):
    sw_proc, _topo = switch_with_ports
    async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
        await install(sw)
        header = Header(op=Op.SLOT_SET, request_id=77, keyspace=1, slot=9, source_id=2, target_id=1)
        frame = udp_frame(encode(header, Control(4)), dst_ip=SERVICE_IP, dst_port=SERVICE_PORT_BASE)
        packets = sw.read_packets()
        first = asyncio.ensure_future(anext(packets))
        await asyncio.sleep(0)  # the iterator registers its queue on its first step
        await sw.write([fy.P4PacketOut(frame, egress_port=0, submit_to_ingress=1, _pad=0)])
        pin = await asyncio.wait_for(first, 5)
        assert pin.metadata["reason"] == PACKET_IN_REASON_SLOT_MAP
        answer = decode_header(udp_payload(pin.payload))
        assert answer.op == Op.SLOT_SET | REPLY_BIT
        assert (answer.request_id, answer.slot, answer.source_id, answer.target_id) == (77, 9, 2, 1)


def _frames_through(h1, h2, ids: list[int], timeout: float = 3.0) -> list[tuple[int, float]]:
    """Send GETs with ``ids`` from h1; (id, arrival time) of those that reach h2, in order."""
    sent_at = {}
    for rid in ids:
        sent_at[rid] = time.monotonic()
        h1.send(get_frame(rid))
    got: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(ids) and time.monotonic() < deadline:
        frame = recv_matching(
            h2, lambda f: request_id_of(f) in sent_at, deadline - time.monotonic()
        )
        if frame is None:
            break
        rid = request_id_of(frame)
        assert rid is not None
        got.append((rid, time.monotonic() - sent_at[rid]))
    return got


async def test_runtime_faults_delay_keeps_order_and_drop_drops(switch_with_ports):
    sw_proc, topo = switch_with_ports
    ctl = ControlClient(sw_proc.control_socket)
    h1 = host_socket(topo.hosts[1])
    h2 = host_socket(topo.hosts[2])
    try:
        async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
            await install(sw, default_owner=2)
            ctl.set_fault(2, delay_ms=80)
            ids = list(range(1000, 1040))
            got = await asyncio.to_thread(_frames_through, h1, h2, ids)
            assert [rid for rid, _ in got] == ids  # all of them, in order
            assert min(delay for _, delay in got) >= 0.075
            assert ctl.stats()["ports"]["2"]["fault"] == "drop=0,delay_ms=80"

            # Lower the delay while frames wait: later frames do not overtake them.
            ctl.set_fault(2, delay_ms=300)
            first = await asyncio.to_thread(_send_only, h1, list(range(2000, 2010)))
            ctl.set_fault(2, delay_ms=0)
            started = time.monotonic()
            second = await asyncio.to_thread(_send_only, h1, list(range(2010, 2020)))
            arrived = await asyncio.to_thread(_collect, h2, set(first) | set(second))
            assert arrived == first + second
            assert time.monotonic() - started >= 0.2  # the second batch waited its turn

            ctl.set_fault(2, drop=1.0)
            got = await asyncio.to_thread(_frames_through, h1, h2, [3000, 3001, 3002], 0.5)
            assert got == []
            assert ctl.stats()["ports"]["2"]["fault_drops"] == 3
            ctl.clear_fault(2)
            got = await asyncio.to_thread(_frames_through, h1, h2, [4000])
            assert [rid for rid, _ in got] == [4000]
            with pytest.raises(ControlError, match="drop must be a probability"):
                ctl.set_fault(2, drop=1.5)
            with pytest.raises(ControlError, match="not a port of this switch"):
                ctl.set_fault(9, drop=0.5)
    finally:
        h1.close()
        h2.close()


def _send_only(h1, ids: list[int]) -> list[int]:
    for rid in ids:
        h1.send(get_frame(rid))
    return ids


def _collect(h2, wanted: set[int], timeout: float = 3.0) -> list[int]:
    out: list[int] = []
    deadline = time.monotonic() + timeout
    while len(out) < len(wanted) and time.monotonic() < deadline:
        frame = recv_matching(h2, lambda f: request_id_of(f) in wanted, deadline - time.monotonic())
        if frame is None:
            break
        out.append(request_id_of(frame))
    return out


async def test_fault_at_start(topo):
    with run_switch(*topo.port_args(), "--fault", "2:drop=1.0", control=True) as sw_proc:
        h1 = host_socket(topo.hosts[1])
        h2 = host_socket(topo.hosts[2])
        try:
            async with fy.Switch("c", sw_proc.address, primary_options()) as sw:
                await install(sw, default_owner=2)
                got = await asyncio.to_thread(_frames_through, h1, h2, [1, 2], 0.5)
                assert got == []
                stats = ControlClient(sw_proc.control_socket).stats()
                assert stats["ports"]["2"]["fault_drops"] == 2
        finally:
            h1.close()
            h2.close()


def test_sigterm_removes_what_the_switch_created(topo, tmp_path):
    pid_file = tmp_path / "switch.pid"
    grpc_sock = tmp_path / "p4rt.sock"
    ctl_sock = tmp_path / "ctl.sock"
    proc = subprocess.Popen(
        switch_argv(
            *topo.port_args(),
            "--grpc-addr",
            f"unix:{grpc_sock}",
            "--pid-file",
            str(pid_file),
            "--control-socket",
            str(ctl_sock),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ready" in line, proc.stderr.read()
        assert int(pid_file.read_text()) == proc.pid
        assert grpc_sock.exists() and ctl_sock.exists()
        assert oct(ctl_sock.stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not pid_file.exists() and not grpc_sock.exists() and not ctl_sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "1"], "want N=IFACE"),
        (["--port", "255=eth0"], "not the CPU port"),
        (["--port", "1=a", "--port", "1=b"], "given twice"),
        (["--port", "1=a", "--fault", "2:drop=0.1"], "is not a --port"),
        (["--port", "1=a", "--fault", "1:drop=2"], "probability"),
        (["--port", "1=a", "--fault", "1:jitter=2"], "unknown setting"),
        (["--tls-cert", "/nonexistent"], "both --tls-cert and --tls-key"),
    ],
)
def test_bad_command_lines(args, message):
    res = subprocess.run(switch_argv(*args), capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert message in res.stderr


def test_missing_interface_or_namespace_is_a_clear_error(needs_root):
    res = subprocess.run(
        switch_argv("--netns", "nmt3-does-not-exist", "--port", "1=sw1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "network namespace 'nmt3-does-not-exist' does not exist" in res.stderr
    res = subprocess.run(
        switch_argv("--port", "1=nmt3nosuchif"), capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 1
    assert "no interface 'nmt3nosuchif'" in res.stderr


def test_address_in_use_is_refused(switch):
    # gRPC's SO_REUSEPORT is off: a second switch on the same address fails instead of
    # silently sharing the port with the first.
    res = subprocess.run(
        switch_argv("--grpc-addr", switch.address), capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 1
    assert "Failed to bind to address" in res.stderr
