"""The lab with its switch: supervised start/stop, and hosts talking through it.

The end-to-end check is what the lab's plan promises: with the ``ipv4_lpm`` routes derived
from :meth:`Topology.routes` installed over P4Runtime, a host's kernel reaches another host's
socket through the lab switch (static neighbours, no ARP, TX offload off so the checksums the
switch re-sends are whole).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from finsy import P4TableAction, P4TableEntry, P4TableMatch, Switch, SwitchOptions
from support.p4rt_clients import p4runtime_opens

from netmigrate import resources
from netmigrate.lab import LabError, Supervisor, Topology, down, status, up
from netmigrate.lab.switch_process import SWITCH_SERVICE, start_switch, stop_switch, switch_spec
from netmigrate.netns import call_in_netns

pytestmark = pytest.mark.root


def _gone(pid: int, wait: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie waiting for its parent)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rindex(")") + 2] in "ZX":
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_switch_spec_serves_every_port_of_the_topology(topology: Topology):
    spec = switch_spec(topology, grpc_addr="127.0.0.1:9999", faults=["2:drop=0.5"])
    argv = list(spec.argv)
    assert argv[argv.index("--netns") + 1] == topology.switch_netns
    ports = [argv[i + 1] for i, a in enumerate(argv) if a == "--port"]
    assert ports == [f"{h.switch_port}={h.switch_iface}" for h in topology.hosts]
    assert argv[argv.index("--fault") + 1] == "2:drop=0.5"
    assert spec.netns is None  # P4Runtime listens in the root namespace


async def _install_routes(addr: str, topology: Topology) -> None:
    options = SwitchOptions(p4info=resources.p4info_path(), p4blob=b"", device_id=1)
    async with Switch("lab", addr, options) as sw:
        await sw.insert(
            P4TableEntry(
                "ipv4_lpm",
                match=P4TableMatch(dstAddr=prefix),
                action=P4TableAction("ipv4_forward", dst_mac=mac, port=port),
            )
            for prefix, mac, port in topology.routes()
        )


def test_hosts_talk_through_the_lab_switch(lab_topology: Topology, run_dir: Path):
    topo = lab_topology
    addr = f"127.0.0.1:{_free_port()}"
    started = start_switch(topo, run_dir, grpc_addr=addr)
    assert started.changed
    again = start_switch(topo, run_dir, grpc_addr=addr)
    assert again.changed is False and again.pid == started.pid
    assert status(topo, run_dir)["processes"][SWITCH_SERVICE]["running"] is True

    asyncio.run(_install_routes(addr, topo))
    a, b = topo.hosts[0], topo.hosts[2]

    def bind_b() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((b.ip, 50000))
        s.settimeout(3)
        return s

    def ask_from_a() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"ping " * 400, (b.ip, 50000))
            return s.recvfrom(9000)[0]

    server = call_in_netns(b.netns, bind_b)
    try:
        # b echoes from a thread of its own; a's kernel only accepts the reply if the UDP
        # checksum the switch passed on is whole.
        def echo() -> None:
            data, peer = server.recvfrom(9000)
            server.sendto(data.upper(), peer)

        t = threading.Thread(target=echo)
        t.start()
        reply = call_in_netns(a.netns, ask_from_a)
        t.join(5)
    finally:
        server.close()
    assert reply == b"PING " * 400

    # TCP too (the agents' gRPC copy channel crosses the switch): a 64 KiB exchange needs
    # many full-size segments with whole checksums both ways.
    c = topo.hosts[1]

    def listen_c() -> socket.socket:
        s = socket.socket()
        s.bind((c.ip, 6000))
        s.listen()
        s.settimeout(5)
        return s

    def tcp_from_a() -> bytes:
        with socket.create_connection((c.ip, 6000), timeout=5) as s:
            s.sendall(b"x" * 65536)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    listener = call_in_netns(c.netns, listen_c)

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            conn.sendall(str(total).encode())

    try:
        t = threading.Thread(target=serve_one)
        t.start()
        assert call_in_netns(a.netns, tcp_from_a) == b"65536"
        t.join(5)
    finally:
        listener.close()

    assert stop_switch(run_dir) is True
    assert Supervisor(run_dir).status(SWITCH_SERVICE).running is False
    assert _gone(started.pid)


def test_cli_up_with_switch_and_down(prefix: str, run_dir: Path):
    common = ["--prefix", prefix, "--hosts", "client,redis1", "--run-dir", str(run_dir)]
    addr = f"127.0.0.1:{_free_port()}"
    cli = [sys.executable, "-m", "netmigrate.cli", "lab"]
    try:
        proc = subprocess.run(
            [*cli, "up", *common, "--with-switch", "--grpc-addr", addr, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert any(a.startswith(f"started {SWITCH_SERVICE}") for a in doc["actions"])
        pid = Supervisor(run_dir).status(SWITCH_SERVICE).pid
        assert pid is not None
        with socket.create_connection(("127.0.0.1", int(addr.rsplit(":", 1)[1])), timeout=2):
            pass

        proc = subprocess.run(
            [*cli, "up", *common, "--with-switch", "--grpc-addr", addr, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["changed"] is False
        assert Supervisor(run_dir).status(SWITCH_SERVICE).pid == pid

        proc = subprocess.run([*cli, "down", *common], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"stopped {SWITCH_SERVICE}" in proc.stdout
        assert _gone(pid)
    finally:
        subprocess.run([*cli, "down", *common], capture_output=True, timeout=60)


def test_down_stops_the_switch(topology: Topology, run_dir: Path):
    up(topology, run_dir)
    try:
        pid = start_switch(topology, run_dir, grpc_addr=f"127.0.0.1:{_free_port()}").pid
        result = down(topology, run_dir)
        assert f"stopped {SWITCH_SERVICE}" in result.actions
        assert _gone(pid)
    finally:
        down(topology, run_dir)


def test_switch_on_a_unix_socket(topology: Topology, run_dir: Path, tmp_path: Path):
    up(topology, run_dir)
    try:
        sock = tmp_path / "p4rt.sock"
        started = start_switch(topology, run_dir, grpc_addr=f"unix:{sock}")
        assert started.changed and sock.exists()
        # Ready means the socket accepts connections, not merely that the file exists.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
    finally:
        down(topology, run_dir)


def test_bad_grpc_addresses_are_rejected(topology: Topology):
    for bad in ("localhost", "127.0.0.1:", "127.0.0.1:70000", ":9559", "unix:relative.sock"):
        with pytest.raises(LabError, match="invalid gRPC address"):
            switch_spec(topology, grpc_addr=bad)


def test_cli_up_with_switch_serves_mutual_tls(prefix: str, run_dir: Path, tmp_path: Path):
    from support.pki import make_pki

    from netmigrate.p4rt import TlsOptions

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    common = ["--prefix", prefix, "--hosts", "client,redis1", "--run-dir", str(run_dir)]
    addr = f"127.0.0.1:{_free_port()}"
    tls_args = [
        *("--switch-tls-cert", str(pki.server_cert)),
        *("--switch-tls-key", str(pki.server_key)),
        *("--switch-tls-ca", str(pki.ca)),
    ]
    cli = [sys.executable, "-m", "netmigrate.cli", "lab"]

    def lab_up(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, "up", *common, "--with-switch", "--grpc-addr", addr, "--json", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        # A key others can read is refused before anything is made.
        pki.server_key.chmod(0o640)
        refused = lab_up(*tls_args)
        assert refused.returncode == 1
        assert "readable by others (mode 0640)" in refused.stderr
        assert not run_dir.exists()
        pki.server_key.chmod(0o600)
        partial = lab_up(*tls_args[:4])
        assert partial.returncode == 1 and "go together" in partial.stderr

        proc = lab_up(*tls_args)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert any(a.endswith("(mutual TLS)") for a in doc["actions"]), doc["actions"]
        pid = Supervisor(run_dir).status(SWITCH_SERVICE).pid
        # The files by name, never their contents, on the switch's command line.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert str(pki.server_key) in cmdline and "PRIVATE KEY" not in cmdline
        key_line = pki.server_key.read_text().splitlines()[1]
        assert key_line not in proc.stdout + proc.stderr
        assert key_line not in (run_dir / f"{SWITCH_SERVICE}.state").read_text()

        client = TlsOptions(pki.ca, pki.client_cert, pki.client_key)
        assert asyncio.run(p4runtime_opens(addr, client))
        assert not asyncio.run(p4runtime_opens(addr, None))
        assert not asyncio.run(p4runtime_opens(addr, TlsOptions(ca=pki.ca)))
        rogue = TlsOptions(pki.ca, pki.rogue_cert, pki.rogue_key)
        assert not asyncio.run(p4runtime_opens(addr, rogue))

        again = lab_up(*tls_args)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["changed"] is False
        assert Supervisor(run_dir).status(SWITCH_SERVICE).pid == pid

        # New material at the same paths (a renewed certificate): the switch restarts to read it.
        make_pki(tmp_path / "pki")
        renewed = lab_up(*tls_args)
        assert renewed.returncode == 0, renewed.stderr
        assert json.loads(renewed.stdout)["changed"] is True
        assert _gone(pid)
        client = TlsOptions(pki.ca, pki.client_cert, pki.client_key)
        assert asyncio.run(p4runtime_opens(addr, client))

        # Without the options: plain text again, as before (TLS is off by default).
        plain = lab_up()
        assert plain.returncode == 0, plain.stderr
        assert json.loads(plain.stdout)["changed"] is True
        assert asyncio.run(p4runtime_opens(addr, None))
    finally:
        subprocess.run([*cli, "down", *common], capture_output=True, timeout=60)
