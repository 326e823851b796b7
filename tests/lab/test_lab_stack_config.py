"""``netmigrate lab up --full`` builds its stack on the topology the options describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from netmigrate.lab import cli
from netmigrate.lab.stack import ServerInfo, Stack, _agent_process
from netmigrate.protocol.path_mtu import datagram_limit


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["up", "--full", *argv])


def _max_datagram(argv: tuple[str, ...]) -> int:
    return int(argv[argv.index("--max-datagram") + 1])


def test_full_stack_keeps_the_mtu_and_subnet_of_the_options(tmp_path: Path):
    args = _args("--prefix", "nmcfg", "--mtu", "1500", "--subnet", "10.9.0.0/24")
    topology = cli._topology(args)
    config = cli._stack_config(args, topology, tmp_path)
    # The stack's own view of the lab (it repairs the links from it) is the one asked for.
    assert config.topology() == topology
    assert config.topology().mtu == 1500
    # And the agents size their datagrams for that MTU, not the lab's default 9000.
    server = ServerInfo(
        name="redis1", server_id=1, netns="nmcfg-redis1", ip="10.9.0.11", switch_port=2,
        data="10.9.0.11:7001", control_lab="10.9.0.11:50051", control="127.0.0.1:17001",
        redis_socket="/x.sock", redis_url="unix:///x.sock",
    )  # fmt: skip
    stack = Stack(
        prefix="nmcfg", run_dir=str(tmp_path), p4runtime="127.0.0.1:9559", device_id=1,
        election_id=1, switch_control_socket="", keyspace_id=1, service_ip="10.0.1.1",
        service_port=7000, default_owner=1, client_netns="nmcfg-client", client_ip="10.9.0.10",
        servers=(server,),
    )  # fmt: skip
    spec = _agent_process(config, stack, server)
    assert _max_datagram(spec.argv) == datagram_limit(1500) < datagram_limit(9000)
