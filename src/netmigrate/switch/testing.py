"""Test fixtures around the real lab switch: its process, and namespaces with veth ports.

Used by the switch, p4rt and interoperability tests (and usable by conformance tests): the
switch runs as ``python -m netmigrate.cli switch ...`` exactly as the lab starts it, and every
namespace, veth and process created here is removed on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netmigrate.netns import call_in_netns
from netmigrate.switch.cli import READY_PREFIX
from netmigrate.switch.ports import ETH_P_ALL, PACKET_IGNORE_OUTGOING, SOL_PACKET

#: The opaque device config tests install (the lab switch stores it and gives it back).
DEVICE_CONFIG = b'{"lab": "opaque device config"}'

_READY = re.compile(re.escape(READY_PREFIX) + r" grpc=(\S+)")


class SwitchStartError(RuntimeError):
    pass


@dataclass
class SwitchProcess:
    """A running ``netmigrate switch``; ``address`` is its P4Runtime address."""

    proc: subprocess.Popen
    address: str
    log_path: Path
    control_socket: Path | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def switch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "netmigrate.cli", "switch", *args]


@contextlib.contextmanager
def run_switch(
    *args: str,
    grpc_addr: str = "127.0.0.1:0",
    control: bool = False,
    timeout: float = 30.0,
    log_level: str = "INFO",
    cpu: int | None = None,
    keep_log: Path | None = None,
) -> Iterator[SwitchProcess]:
    """Start the switch with ``args`` (plus address, control socket); stop it on exit.

    ``cpu``: pin the switch process to that CPU (benchmarks). ``keep_log``: copy the
    switch's log there when it stops.
    """
    with tempfile.TemporaryDirectory(prefix="nmt3-switch-") as tmp:
        log_path = Path(tmp) / "switch.log"
        argv = switch_argv(*args, "--grpc-addr", grpc_addr, "--log-level", log_level)
        ctl = Path(tmp) / "control.sock" if control else None
        if ctl is not None:
            argv += ["--control-socket", str(ctl)]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
            )
        sw = SwitchProcess(proc, "", log_path, ctl)
        try:
            sw.address = _wait_ready(proc, timeout, log_path)
            yield sw
        finally:
            sw.stop()
            if keep_log is not None:
                keep_log.write_bytes(log_path.read_bytes())


def _wait_ready(proc: subprocess.Popen, timeout: float, log_path: Path) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = _READY.search(buf.decode(errors="replace"))
            if m:
                return m.group(1)
    finally:
        sel.close()
    proc.kill()
    proc.wait()
    raise SwitchStartError(
        f"the switch did not become ready (exit {proc.returncode}):\n"
        + log_path.read_text(errors="replace")[-4000:]
    )


# ---------------------------------------------------------------------------------------------
# Namespaces and veths


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _in_ns(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, check=True)


@dataclass
class Topology:
    """``switch_ns`` holds the switch ports ``sw<N>``; host namespace ``hosts[N]`` holds the
    peer ``eth0`` of port N."""

    prefix: str
    switch_ns: str
    hosts: dict[int, str] = field(default_factory=dict)

    def port_args(self) -> list[str]:
        out = ["--netns", self.switch_ns]
        for n in sorted(self.hosts):
            out += ["--port", f"{n}=sw{n}"]
        return out


@contextlib.contextmanager
def veth_topology(ports: Sequence[int], prefix: str = "nmt3-") -> Iterator[Topology]:
    """A switch namespace with one veth port per number, each to its own host namespace.

    IPv6 is off (no router solicitations on the wire), TX checksum offload is off (DESIGN
    section 8), MTU 9000. Everything is deleted on exit.
    """
    tag = prefix + secrets.token_hex(3)
    topo = Topology(tag, f"{tag}-sw")
    created: list[str] = []
    try:
        for ns in [topo.switch_ns] + [f"{tag}-h{n}" for n in ports]:
            _ip("netns", "add", ns)
            created.append(ns)
            _in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            _in_ns(ns, "ip", "link", "set", "lo", "up")
        for n in ports:
            host = f"{tag}-h{n}"
            topo.hosts[n] = host
            _ip(
                "link", "add", f"sw{n}", "netns", topo.switch_ns, "mtu", "9000",
                "type", "veth", "peer", "name", "eth0", "netns", host, "mtu", "9000",
            )  # fmt: skip
            for ns, dev in ((topo.switch_ns, f"sw{n}"), (host, "eth0")):
                _in_ns(ns, "ethtool", "-K", dev, "tx", "off")
                _in_ns(ns, "ip", "link", "set", dev, "up")
        yield topo
    finally:
        for ns in reversed(created):
            _ip("netns", "del", ns, check=False)


def host_socket(netns: str, iface: str = "eth0", timeout: float = 2.0) -> socket.socket:
    """A raw socket on a host's interface: send frames into the switch, receive its output."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.bind((iface, ETH_P_ALL))
        s.settimeout(timeout)
        return s

    return call_in_netns(netns, make)


def recv_matching(sock: socket.socket, predicate, timeout: float = 2.0) -> bytes | None:
    """The first frame on ``sock`` that ``predicate`` accepts, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            return None
        if predicate(frame):
            return frame
    return None


# ---------------------------------------------------------------------------------------------
# finsy clients


def finsy_options(**kw: Any) -> Any:
    """finsy ``SwitchOptions`` for the lab switch: device id 1, the committed P4Info."""
    import finsy as fy  # the switch process itself does not need the client library

    from netmigrate.resources import p4info_path

    base: dict[str, Any] = {"p4info": p4info_path(), "device_id": 1, "initial_election_id": 10}
    base.update(kw)
    return fy.SwitchOptions(**base)


def primary_options(**kw: Any) -> Any:
    """A finsy primary that installs (and so resets) the pipeline when it connects."""
    return finsy_options(p4blob=DEVICE_CONFIG, p4force=True, **kw)


# ---------------------------------------------------------------------------------------------
# NetMigrate forwarding state for tests and benchmarks


@dataclass(frozen=True)
class LabServer:
    server_id: int
    port: int
    ip: str
    mac: int
    udp_port: int


#: The service address of the test keyspace (a NetMigrate service port).
SERVICE_IP = "10.9.0.100"


def lab_servers(ports: Sequence[int]) -> list[LabServer]:
    """Server ``n`` behind switch port ``n``: 10.9.0.n, MAC 02:00:00:00:09:n, UDP 50001."""
    from netmigrate.protocol.constants import SERVICE_PORT_BASE

    return [
        LabServer(n, n, f"10.9.0.{n}", 0x020000000900 + n, SERVICE_PORT_BASE + 1) for n in ports
    ]


def netmigrate_entries(
    servers: Sequence[LabServer],
    *,
    keyspace_id: int = 1,
    default_owner: int = 1,
    service_ip: str = SERVICE_IP,
    cpu_senders: bool = False,
) -> tuple[list[Any], list[Any]]:
    """(table entries, clone sessions) of one keyspace served by ``servers``.

    ``cpu_senders`` also lets every server's SLOT_START/COMPLETE come from the CPU port
    (tests inject them with packet-out instead of from a host).
    """
    from netmigrate.p4rt import CloneSessionSpec, TableEntrySpec
    from netmigrate.protocol.constants import CPU_PORT, SERVICE_PORT_BASE

    entries = [
        TableEntrySpec(
            "NetMigrateIngress.keyspace",
            {"hdr.ipv4.dstAddr": service_ip, "hdr.udp.dstPort": SERVICE_PORT_BASE},
            "NetMigrateIngress.set_keyspace",
            {"keyspace_id": keyspace_id, "default_owner": default_owner, "slot_base": 0},
        ),
        TableEntrySpec(
            "NetMigrateIngress.ipv4_lpm",
            {"hdr.ipv4.dstAddr": "10.9.0.0/24"},
            "NetMigrateIngress.ipv4_forward",
            {"dst_mac": servers[-1].mac, "port": servers[-1].port},
        ),
    ]
    clones = []
    for s in servers:
        entries += [
            TableEntrySpec(
                "NetMigrateIngress.server_port",
                {"meta.dest_server": s.server_id},
                "NetMigrateIngress.set_server_port",
                {"port": s.port},
            ),
            TableEntrySpec(
                "NetMigrateEgress.server_rewrite",
                {"meta.egress_server": s.server_id},
                "NetMigrateEgress.rewrite_to_server",
                {"dst_mac": s.mac, "dst_ip": s.ip, "udp_port": s.udp_port},
            ),
            TableEntrySpec(
                "NetMigrateIngress.sender_check",
                {
                    "hdr.nm.source_id": s.server_id,
                    "standard_metadata.ingress_port": s.port,
                    "hdr.ipv4.srcAddr": s.ip,
                },
                "NetMigrateIngress.sender_verified",
            ),
        ]
        if cpu_senders:
            entries.append(
                TableEntrySpec(
                    "NetMigrateIngress.sender_check",
                    {
                        "hdr.nm.source_id": s.server_id,
                        "standard_metadata.ingress_port": CPU_PORT,
                        "hdr.ipv4.srcAddr": s.ip,
                    },
                    "NetMigrateIngress.sender_verified",
                )
            )
        clones.append(CloneSessionSpec.to_port(s.server_id, s.port))
    return entries, clones


# ---------------------------------------------------------------------------------------------
# A throwaway PKI for TLS tests


@dataclass(frozen=True)
class LabPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate from a CA the switch does not trust.
    rogue_cert: Path
    rogue_key: Path


def make_pki(directory: Path, server_names: Sequence[str] = ("127.0.0.1", "localhost")) -> LabPki:
    """A CA, a server certificate for ``server_names`` and client certificates (EC P-256)."""
    import datetime
    import ipaddress as ipa

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, cn: str, usage, sans=()):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            alt = []
            for s in sans:
                try:
                    alt.append(x509.IPAddress(ipa.ip_address(s)))
                except ValueError:
                    alt.append(x509.DNSName(s))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, ca_cert = ca("netmigrate test CA")
    rogue_ca_key, rogue_ca_cert = ca("rogue CA")
    s_key, s_cert = leaf(
        ca_key, ca_cert, "lab switch", ExtendedKeyUsageOID.SERVER_AUTH, server_names
    )
    c_key, c_cert = leaf(ca_key, ca_cert, "controller", ExtendedKeyUsageOID.CLIENT_AUTH)
    r_key, r_cert = leaf(rogue_ca_key, rogue_ca_cert, "rogue", ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = LabPki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        rogue_cert=directory / "rogue.pem",
        rogue_key=directory / "rogue.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(s_cert.public_bytes(pem))
    write_key(s_key, pki.server_key)
    pki.client_cert.write_bytes(c_cert.public_bytes(pem))
    write_key(c_key, pki.client_key)
    pki.rogue_cert.write_bytes(r_cert.public_bytes(pem))
    write_key(r_key, pki.rogue_key)
    return pki
