"""The inventory a testbed writes: the shape of ``inventory/testbed.example``, outside the repo.

What CI runs is what a user copies: hosts over SSH with ``become``, systemd supervision, the
switch on a switch host. Only the addresses, the SSH key and where secrets and reports live
differ from the example.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netmigrate.lab.topology import Host, Topology

P4RUNTIME_PORT = 9559
LAB_SWITCH_DEVICE_ID = 1
KEYSPACE_ID = 50000
KEYSPACE_ADDRESS = "10.0.1.1"


@dataclass(frozen=True, slots=True)
class InventoryHost:
    name: str
    mgmt_ip: str
    data: Host | None = None


def write_inventory(
    directory: Path,
    *,
    switch: InventoryHost,
    data_hosts: list[InventoryHost],
    topology: Topology,
    private_key: Path,
    known_hosts: Path,
    state_dir: Path,
    user: str,
) -> Path:
    """Write ``hosts.yml`` and ``group_vars/all.yml``; returns the inventory directory."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    secret = _agent_password(state_dir / "secrets")

    def data_vars(h: InventoryHost) -> dict[str, Any]:
        assert h.data is not None
        out: dict[str, Any] = {
            "ansible_host": h.mgmt_ip,
            "netmigrate_ip": h.data.ip,
            "netmigrate_mac": h.data.mac,
            "netmigrate_switch_port": h.data.switch_port,
        }
        if h.data.name.startswith("redis"):
            out["netmigrate_server_id"] = int(h.data.name.removeprefix("redis"))
        return out

    clients = {h.name: data_vars(h) for h in data_hosts if not _is_redis(h)}
    redis = {h.name: data_vars(h) for h in data_hosts if _is_redis(h)}
    hosts = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            },
            "children": {
                "switches": {
                    "hosts": {
                        switch.name: {
                            "ansible_host": switch.mgmt_ip,
                            "netmigrate_switch_interfaces": [
                                {"port": port, "iface": iface}
                                for port, iface in sorted(topology.switch_ports().items())
                            ],
                        }
                    }
                },
                "clients": {"hosts": clients},
                "redis_nodes": {"hosts": redis},
            },
            "vars": {
                "ansible_user": user,
                "ansible_become": True,
                # One SSH round trip per task instead of three (sudo needs no tty on Debian).
                "ansible_pipelining": True,
                # The runtime role's virtualenv: our modules need its packages (site.yml's
                # first play installs it with the system's Python).
                "ansible_python_interpreter": "{{ netmigrate_python }}",
                "ansible_ssh_private_key_file": str(private_key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
                ),
            },
        }
    }
    redis_names = sorted(redis)
    group_vars: dict[str, Any] = {
        # --- switch: the lab switch as a systemd unit on the switch host (BMv2's stand-in) ---
        "netmigrate_switch_kind": "lab",
        "netmigrate_p4runtime_address": f"{switch.mgmt_ip}:{P4RUNTIME_PORT}",
        "netmigrate_p4runtime_device_id": LAB_SWITCH_DEVICE_ID,
        "netmigrate_p4runtime_election_id": 10,
        # Mutual TLS on P4Runtime: its own CA and certificates made on the controller.
        "netmigrate_p4runtime_tls": True,
        "netmigrate_p4runtime_pki_dir": str(directory / "pki-p4runtime"),
        "netmigrate_p4runtime_tls_dir": "/etc/netmigrate/p4runtime-tls",
        "netmigrate_p4info": "{{ playbook_dir }}/../p4/build/netmigrate.p4info.txtpb",
        # migrate.yml checks the pipeline from the client host: the runtime role's link there.
        "netmigrate_controller_p4info": "/opt/netmigrate/p4/build/netmigrate.p4info.txtpb",
        "netmigrate_device_config": "",
        "netmigrate_p4_build": False,
        # --- keyspace ---
        "netmigrate_keyspace_id": KEYSPACE_ID,
        "netmigrate_keyspace_address": KEYSPACE_ADDRESS,
        "netmigrate_keyspace_default_owner": 1,
        "netmigrate_agent_udp_port": KEYSPACE_ID + 1,
        "netmigrate_agent_control_port": 7000,
        # --- hosts ---
        "netmigrate_supervisor": "systemd",
        "netmigrate_node_dir": "/var/lib/netmigrate",
        "netmigrate_python": "/opt/netmigrate/venv/bin/python",
        "netmigrate_wheelhouse": str(state_dir / "wheelhouse"),
        "netmigrate_redis_port": 6379,
        "netmigrate_redis_maxmemory": "256mb",
        "netmigrate_redis_maxmemory_policy": "noeviction",
        # A file outside the inventory stands in for the vault of a real testbed.
        "netmigrate_agent_redis_password": (
            "{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"
        ),
        # --- control service: mutual TLS, the CA and certificates made on the controller ---
        "netmigrate_control_tls": True,
        "netmigrate_control_pki_dir": str(directory / "pki"),
        "netmigrate_control_tls_dir": "/etc/netmigrate/controller-tls",
        # --- migration: the client host reaches the agents (data network) and the switch ---
        "netmigrate_controller_host": next(iter(clients), "localhost"),
        "netmigrate_migration_source": redis_names[0],
        "netmigrate_migration_target": redis_names[1],
        "netmigrate_migration_slots": "0-4095",
        "netmigrate_migration_rate_limit": 0,
        "netmigrate_migration_timeout": 600,
        "netmigrate_migration_report_dir": str(state_dir / "reports" / "migrations"),
        # --- load ---
        "netmigrate_load_keys": 20000,
        "netmigrate_load_value_size": 64,
        "netmigrate_load_concurrency": 32,
        "netmigrate_load_duration": 600,
        "netmigrate_bench_dir": str(state_dir / "reports" / "bench"),
        "netmigrate_bench_before": 5,
        "netmigrate_bench_after": 5,
    }
    # JSON is YAML: no YAML library needed in the product package.
    header = (
        "---\n# Written by `netmigrate testbed up`, in the shape of inventory/testbed.example.\n"
    )
    for path, data in (
        (directory / "hosts.yml", hosts),
        (directory / "group_vars" / "all.yml", group_vars),
    ):
        path.write_text(header + json.dumps(data, indent=2) + "\n")
    return directory


def _is_redis(h: InventoryHost) -> bool:
    return h.data is not None and h.data.name.startswith("redis")


def _agent_password(secret_dir: Path) -> Path:
    """A generated agent password in a 0600 file (never in the inventory, never printed)."""
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = secret_dir / "redis-agent-password"
    if not path.exists():
        alphabet = string.ascii_letters + string.digits
        path.touch(mode=0o600)
        path.write_text("".join(secrets.choice(alphabet) for _ in range(32)))
    return path
