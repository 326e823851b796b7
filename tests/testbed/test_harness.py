"""The testbed harness: fresh hosts with systemd as PID 1, reachable over SSH, removed entirely.

Root, systemd-nspawn, debootstrap and Debian's mirror (apt inside the hosts) are required.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from testbed_helpers import MGMT_SUBNET, PREFIX, STATE_ROOT, ssh

from netmigrate.lab.netns import list_netns
from netmigrate.testbed import harness
from netmigrate.testbed.network import MgmtNet

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_every_host_boots_systemd_as_pid1_with_its_own_identity(testbed_state) -> None:
    machine_ids, host_keys = set(), set()
    for record in testbed_state.hosts:
        out = ssh(testbed_state, record, "hostname; ps -p 1 -o comm=; cat /etc/machine-id; "
                  "sudo -n systemctl is-system-running --wait; "
                  "sudo -n cat /etc/ssh/ssh_host_ed25519_key.pub")  # fmt: skip
        hostname, pid1, machine_id, system_state, host_key = out.split("\n", 4)
        assert hostname == record.name
        assert pid1 == "systemd"
        assert system_state == "running", f"{record.name}: {system_state}"
        machine_ids.add(machine_id)
        host_keys.add(host_key.strip())
    assert len(machine_ids) == len(host_keys) == len(testbed_state.hosts) == 5


def test_hosts_are_wired_like_the_lab_and_reach_debian_through_nat(testbed_state) -> None:
    client, redis1 = testbed_state.hosts[1], testbed_state.hosts[2]
    routes = ssh(testbed_state, redis1, "ip -4 route")
    assert "default via 10.214.0.1 dev mgmt0" in routes
    assert "10.0.1.0/24 via 10.0.0.1 dev eth0" in routes
    addrs = ssh(testbed_state, client, "ip -4 -br addr show dev eth0")
    assert "10.0.0.10/24" in addrs
    # The switch host holds the switch ends of the data network's veths.
    links = ssh(testbed_state, testbed_state.hosts[0], "ip -br link")
    for iface in ("s1-client", "s2-redis1", "s3-redis2", "s4-redis3"):
        assert iface in links
    apt = ssh(testbed_state, redis1, "sudo -n apt-get update -q 2>&1")
    assert "deb.debian.org" in apt and "Err:" not in apt


def test_inventory_names_every_host_with_its_key(testbed_up, testbed_state) -> None:
    inventory = Path(testbed_up["inventory"])
    hosts = (inventory / "hosts.yml").read_text()
    for record in testbed_state.hosts:
        assert f'"{record.name}"' in hosts and record.mgmt_ip in hosts
    known = (Path(testbed_state.state_dir) / "known_hosts").read_text().splitlines()
    assert len(known) == 5


def test_up_twice_is_refused_and_down_leaves_nothing(testbed_up) -> None:
    with pytest.raises(harness.TestbedError, match="is up"):
        harness.up(PREFIX, state_root=STATE_ROOT, mgmt_subnet=MGMT_SUBNET)
    state = harness.TestbedState.load(Path(testbed_up["state_dir"]))
    pids = [h.pid for h in state.hosts]
    harness.down(PREFIX, state_root=STATE_ROOT)
    assert not [ns for ns in list_netns() if ns.startswith(PREFIX + "-")]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert PREFIX + "-" not in links
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert MgmtNet(PREFIX).nft_table not in tables
    assert str(STATE_ROOT) not in Path("/proc/self/mounts").read_text()
    assert not Path(testbed_up["state_dir"]).exists()
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or b"systemd-nspawn" not in cmdline.read_bytes()
    assert (
        Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        == (testbed_up["ip_forward_before"])
    )
    # down on nothing is a no-op, not an error.
    assert harness.down(PREFIX, state_root=STATE_ROOT) == []
    # The template stays cached for the next run.
    assert Path(testbed_up["template"], "etc", "os-release").exists()
