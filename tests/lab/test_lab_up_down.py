"""The lab pieces on real namespaces: up, idempotence, repair, status, down, CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netmigrate.lab import LabError, Topology, build_topology, down, status, up
from netmigrate.lab import netns as nx
from netmigrate.netns import call_in_netns

pytestmark = pytest.mark.root

ETH_P_ALL = 0x0003


def _ip_json(ns: str, *args: str) -> list[dict]:
    return nx.ip_json(*args, netns=ns)


def test_up_creates_namespaces_links_and_addresses(lab_topology: Topology):
    topo = lab_topology
    for ns in topo.netns_names:
        assert nx.netns_exists(ns)
        lo = nx.link(ns, "lo")
        assert lo is not None and "UP" in lo["flags"]
        sysctl = nx.sysctl_get(ns, ["net.ipv6.conf.all.disable_ipv6"])
        assert sysctl == {"net.ipv6.conf.all.disable_ipv6": "1"}
    for host in topo.hosts:
        for ns, iface, mac in (
            (host.netns, host.iface, host.mac),
            (topo.switch_netns, host.switch_iface, host.switch_mac),
        ):
            info = nx.link(ns, iface)
            assert info is not None, f"{ns}:{iface} missing"
            assert info["mtu"] == 9000
            assert info["address"] == mac
            assert "UP" in info["flags"]
            assert info["linkinfo"]["info_kind"] == "veth"
            # The pitfall of DESIGN section 8: TX checksum offload must be off on every end.
            out = nx.run(["ip", "netns", "exec", ns, "ethtool", "-k", iface])
            assert "tx-checksumming: off" in out
        addrs = _ip_json(host.netns, "-4", "addr", "show", "dev", "eth0")
        assert [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]] == [(host.ip, 24)]
        neigh = {
            n["dst"]: (n["lladdr"], n["state"])
            for n in _ip_json(host.netns, "-4", "neigh", "show", "dev", "eth0")
        }
        expected_peers = {topo.gateway} | {h.ip for h in topo.hosts if h is not host}
        assert set(neigh) == expected_peers
        assert all(v == (host.switch_mac, ["PERMANENT"]) for v in neigh.values())
        routes = _ip_json(host.netns, "-4", "route", "show", "default")
        assert [(r["gateway"], r["dev"]) for r in routes] == [(topo.gateway, "eth0")]
    # Nothing of the lab leaks into the root namespace.
    assert nx.link(None, topo.hosts[0].switch_iface) is None


def _capture_one(sock: socket.socket, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sock.recv(65535)
        if len(frame) > 14 and frame[12:14] == b"\x08\x00":
            return frame
    raise AssertionError("no IPv4 frame captured")


def test_host_datagram_reaches_its_switch_port_with_a_full_checksum(lab_topology: Topology):
    """A host's kernel sends to a peer through its own switch port, checksum complete."""
    topo = lab_topology
    a, b = topo.hosts[0], topo.hosts[1]

    def open_capture() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((a.switch_iface, 0))
        return s

    def send_udp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"hello lab" * 50, (b.ip, 50000))

    cap = call_in_netns(topo.switch_netns, open_capture)
    try:
        call_in_netns(a.netns, send_udp)
        frame = Ether(_capture_one(cap))
    finally:
        cap.close()
    assert frame.src == a.mac
    assert frame.dst == a.switch_mac  # static neighbour: no ARP, straight to the switch
    assert frame[IP].src == a.ip and frame[IP].dst == b.ip
    sent_ip_sum, sent_udp_sum = frame[IP].chksum, frame[UDP].chksum
    assert sent_udp_sum != 0
    # Recompute: with TX offload on, the kernel would leave a partial (wrong) UDP checksum.
    frame[IP].chksum = None
    frame[UDP].chksum = None
    again = Ether(bytes(frame))
    assert (again[IP].chksum, again[UDP].chksum) == (sent_ip_sum, sent_udp_sum)


def test_switch_side_frame_reaches_the_host(lab_topology: Topology):
    """Switch port p is wired to host p: a frame sent on s<p>-x arrives at that host's eth0."""
    topo = lab_topology
    for host in topo.hosts:

        def open_udp(ip: str = host.ip) -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, 50001))
            return s

        def send_raw(frame: bytes, iface: str = host.switch_iface) -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                s.bind((iface, 0))
                s.send(frame)

        rx = call_in_netns(host.netns, open_udp)
        try:
            frame = (
                Ether(src=host.switch_mac, dst=host.mac)
                / IP(src=topo.gateway, dst=host.ip)
                / UDP(sport=1234, dport=50001)
                / f"to {host.name}".encode()
            )
            call_in_netns(topo.switch_netns, send_raw, bytes(frame))
            rx.settimeout(2)
            data, _ = rx.recvfrom(100)
            assert data == f"to {host.name}".encode()
        finally:
            rx.close()


def test_up_twice_is_a_no_op(topology: Topology, run_dir: Path):
    try:
        first = up(topology, run_dir)
        assert first.changed and first.actions
        second = up(topology, run_dir)
        assert second.changed is False
        assert second.actions == []
    finally:
        down(topology, run_dir)


def test_up_repairs_a_damaged_lab(lab_topology: Topology, run_dir: Path):
    topo = lab_topology
    a, b, c = topo.hosts
    nx.ip("link", "set", "dev", a.iface, "mtu", "1500", netns=a.netns)
    nx.run(["ip", "netns", "exec", topo.switch_netns, "ethtool", "-K", b.switch_iface, "tx", "on"])
    nx.ip("link", "delete", "dev", c.switch_iface, netns=topo.switch_netns)
    nx.ip("neigh", "del", topo.gateway, "dev", "eth0", netns=a.netns)
    assert status(topo, run_dir)["up"] is False

    result = up(topo, run_dir)
    assert result.changed
    joined = "\n".join(result.actions)
    assert f"{a.netns}: eth0 mtu 9000" in joined
    assert f"{b.switch_iface} tx offload off" in joined
    assert f"created veth {c.netns}:eth0" in joined
    assert f"neighbour {topo.gateway}" in joined
    st = status(topo, run_dir)
    assert st["up"] is True
    assert up(topo, run_dir).changed is False


def test_status_reports_what_exists(lab_topology: Topology, run_dir: Path):
    st = status(lab_topology, run_dir)
    assert st["up"] is True
    assert st["recorded"] is True
    assert all(st["namespaces"].values())
    assert len(st["links"]) == 2 * len(lab_topology.hosts)
    assert all(not link["tx_offload"] and link["mtu"] == 9000 for link in st["links"].values())
    assert all(h["configured"] for h in st["hosts"].values())
    json.dumps(st)  # plain data

    nx.delete_netns(lab_topology.hosts[0].netns)
    st = status(lab_topology, run_dir)
    assert st["up"] is False
    assert st["namespaces"][lab_topology.hosts[0].netns] is False
    assert st["links"][f"{lab_topology.hosts[0].netns}:eth0"] == {"exists": False}


def test_down_removes_everything_and_is_idempotent(topology: Topology, run_dir: Path):
    up(topology, run_dir)
    assert (run_dir / "topology.json").exists()
    result = down(topology, run_dir)
    assert result.changed
    remaining = {ns for ns in nx.list_netns() if ns.startswith(topology.prefix + "-")}
    assert remaining == set()
    assert not run_dir.exists()
    assert down(topology, run_dir).changed is False


def test_down_uses_the_recorded_topology(topology: Topology, run_dir: Path):
    """`down` with only a prefix-level call still removes hosts it was not told about."""
    up(topology, run_dir)
    smaller = build_topology(topology.prefix, ["a"])
    down(smaller, run_dir)
    assert not any(ns.startswith(topology.prefix + "-") for ns in nx.list_netns())


def test_a_different_topology_over_a_recorded_one_is_refused(lab_topology: Topology, run_dir):
    other = build_topology(lab_topology.prefix, ["a", "b"])
    with pytest.raises(LabError, match="different lab topology"):
        up(other, run_dir)
    assert status(lab_topology, run_dir)["up"] is True  # nothing was changed


def test_bare_topology_configures_no_ip(prefix: str, run_dir: Path):
    topo = build_topology(prefix, ["a", "b"], bare=True)
    try:
        up(topo, run_dir)
        for host in topo.hosts:
            addrs = _ip_json(host.netns, "-4", "addr", "show", "dev", "eth0")
            assert [a for entry in addrs for a in entry.get("addr_info", [])] == []
            assert _ip_json(host.netns, "-4", "route", "show") == []
            out = nx.run(["ip", "netns", "exec", host.netns, "ethtool", "-k", "eth0"])
            assert "tx-checksumming: off" in out
        assert status(topo, run_dir)["up"] is True
        assert up(topo, run_dir).changed is False
    finally:
        down(topo, run_dir)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "lab", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_up_status_down(prefix: str, run_dir: Path):
    common = ["--prefix", prefix, "--hosts", "client,redis1", "--run-dir", str(run_dir)]
    try:
        proc = _cli("up", *common, "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["changed"] is True
        hosts = {h["name"]: h for h in doc["topology"]["hosts"]}
        assert hosts["client"]["ip"] == "10.0.0.10" and hosts["client"]["switch_port"] == 1
        assert hosts["redis1"]["ip"] == "10.0.0.11" and hosts["redis1"]["switch_port"] == 2

        proc = _cli("up", *common)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith("changed=false")

        proc = _cli("status", *common)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"lab {prefix}: up" in proc.stdout

        proc = _cli("down", *common, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["changed"] is True

        proc = _cli("status", *common, "--json")
        assert proc.returncode == 3
        assert json.loads(proc.stdout)["up"] is False
    finally:
        _cli("down", *common)


def test_cli_rejects_bad_input_without_changing_anything(prefix: str, run_dir: Path):
    proc = _cli("up", "--prefix", prefix, "--hosts", "a,a", "--run-dir", str(run_dir))
    assert proc.returncode == 1
    assert "duplicate host names" in proc.stderr
    assert not any(ns.startswith(prefix + "-") for ns in nx.list_netns())
    assert not run_dir.exists()
