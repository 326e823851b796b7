"""The testbed's management network: a bridge in the root namespace, one veth per host, NAT.

The data network is the lab's (``netmigrate.lab``: veths from every host to the switch host).
The management network is what a real testbed's out-of-band network is: the controller reaches
every host's SSH (and the switch's P4Runtime) there, and the hosts reach Debian's mirror through
it (nftables masquerade, ``ip_forward``). Names derive from the prefix, so ``down`` finds
everything again even without the state file.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from netmigrate.lab import netns as nx
from netmigrate.lab.topology import IFNAMSIZ
from netmigrate.testbed.errors import TestbedError

DEFAULT_MGMT_SUBNET = "10.213.0.0/24"
MGMT_IFACE = "mgmt0"
#: Upper bound on hosts per testbed (what `down` looks for without a state file).
MAX_HOSTS = 32
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True, slots=True)
class MgmtNet:
    prefix: str
    subnet: str = DEFAULT_MGMT_SUBNET

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def nft_table(self) -> str:
        return f"{self.prefix.replace('-', '_')}_nat"

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def address(self, index: int) -> str:
        """Management address of host ``index`` (0 = the switch host at .10, then .11 ...)."""
        return str(ipaddress.ip_network(self.subnet).network_address + 10 + index)

    def root_iface(self, index: int) -> str:
        name = f"{self.prefix}-m{index}"
        if len(name) > IFNAMSIZ:
            raise TestbedError(f"interface name {name} is too long: use a shorter prefix")
        return name


def bridge_up(net: MgmtNet) -> None:
    if nx.link(None, net.bridge) is None:
        nx.ip("link", "add", net.bridge, "type", "bridge")
        nx.ip("addr", "add", f"{net.gateway}/{net.prefix_len}", "dev", net.bridge)
    nx.ip("link", "set", net.bridge, "up")


def attach(net: MgmtNet, index: int, netns: str) -> str:
    """A veth from the bridge into ``netns`` (``mgmt0``) with the host's address; returns it."""
    outer = net.root_iface(index)
    addr = net.address(index)
    if nx.link(netns, MGMT_IFACE) is None:
        if nx.link(None, outer) is not None:
            nx.ip("link", "delete", outer)
        nx.ip("link", "add", outer, "type", "veth", "peer", "name", MGMT_IFACE, "netns", netns)
        nx.ip("link", "set", outer, "master", net.bridge, "up")
        nx.ip("addr", "add", f"{addr}/{net.prefix_len}", "dev", MGMT_IFACE, netns=netns)
        nx.ip("link", "set", MGMT_IFACE, "up", netns=netns)
    return addr


def route_via_mgmt(
    net: MgmtNet, netns: str, data_gateway: str, data_iface: str, data_routes: list[str]
) -> None:
    """Default route over management (apt, like a real server); ``data_routes`` via the switch.

    The lab points a host's default route at the switch; a testbed host keeps only the
    keyspace's service prefix there, everything else leaves through its management interface.
    """
    for prefix in data_routes:
        nx.ip("route", "replace", prefix, "via", data_gateway, "dev", data_iface, netns=netns)
    nx.ip("route", "replace", "default", "via", net.gateway, "dev", MGMT_IFACE, netns=netns)


def nat_up(net: MgmtNet) -> str:
    """Masquerade the hosts' outbound traffic; returns ip_forward as it was before."""
    before = _IP_FORWARD.read_text().strip()
    ruleset = (
        f"table ip {net.nft_table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {net.subnet} oifname != "{net.bridge}" masquerade\n'
        "  }\n"
        "}\n"
    )
    nat_down(net)
    _nft(["-f", "-"], stdin=ruleset)
    _IP_FORWARD.write_text("1\n")
    return before


def nat_down(net: MgmtNet) -> bool:
    """Delete the NAT table; True when there was one."""
    if net.nft_table not in _nft(["list", "tables"]).split():
        return False
    _nft(["delete", "table", "ip", net.nft_table])
    return True


def restore_ip_forward(value: str) -> None:
    _IP_FORWARD.write_text(f"{value}\n")


def bridge_down(net: MgmtNet) -> bool:
    """Delete the bridge and any veth end of ours left on it; True when something was there."""
    found = False
    # A root end whose peer's namespace was just deleted may vanish while we look at it.
    for name in [*(net.root_iface(i) for i in range(MAX_HOSTS)), net.bridge]:
        if nx.link(None, name) is not None:
            nx.run(["ip", "link", "delete", name], check=False)
            found = True
    return found


def _nft(args: list[str], *, stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            ["nft", *args], input=stdin, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise TestbedError("nft: command not found (apt-get install nftables)") from exc
    if proc.returncode != 0:
        raise TestbedError(f"`nft {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout
