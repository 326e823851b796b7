"""p4runtime-shell (an external P4Runtime client with protobuf 3.20 and grpcio 1.62, in its own
virtualenv) drives the real lab switch: it installs the pipeline from the committed P4Info and a
device config file, inserts and reads back a table entry, reads a counter after a frame went
through, and sends a packet-out that must leave on a port."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.frames import recv_matching

from netmigrate.lab.forwarding import DEVICE_CONFIG
from netmigrate.lab.switch_process import run_switch
from netmigrate.lab.veth_topology import host_socket, veth_topology
from netmigrate.p4rt.frames import udp_frame
from netmigrate.protocol.constants import Decision
from netmigrate.resources import p4info_path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-p4rtshell"
SETUP = ROOT / "scripts" / "setup_p4runtime_shell.sh"

SETUP_AND_WRITE = textwrap.dedent(
    """
    import json, sys
    import p4runtime_sh.shell as sh

    addr, p4info, device_config, payload = sys.argv[1:5]
    sh.setup(device_id=1, grpc_addr=addr, election_id=(0, 1),
             config=sh.FwdPipeConfig(p4info, device_config), verbose=False)
    try:
        te = sh.TableEntry("NetMigrateIngress.ipv4_lpm")(action="NetMigrateIngress.ipv4_forward")
        te.match["hdr.ipv4.dstAddr"] = "10.9.0.0/24"
        te.action["dst_mac"] = "02:00:00:00:09:02"
        te.action["port"] = "2"
        te.insert()
        entries = []
        for e in sh.TableEntry("NetMigrateIngress.ipv4_lpm").read():
            m = e.match["hdr.ipv4.dstAddr"]
            entries.append({
                "value": m.lpm.value.hex(), "prefix_len": m.lpm.prefix_len,
                "action": e.action.action_name,
                "params": {n: e.action[n].value.hex() for n in ("dst_mac", "port")},
            })
        p = sh.PacketOut()
        p.payload = bytes.fromhex(payload)
        p.metadata["egress_port"] = "2"
        p.metadata["submit_to_ingress"] = "0"
        p.metadata["_pad"] = "0"
        p.send()
    finally:
        sh.teardown()  # its stream thread would keep the process alive otherwise
    print(json.dumps({"entries": entries}))
    """
)

READ_COUNTER = textwrap.dedent(
    """
    import json, sys
    import p4runtime_sh.shell as sh

    addr, index = sys.argv[1], int(sys.argv[2])
    sh.setup(device_id=1, grpc_addr=addr, election_id=(0, 2), verbose=False)
    try:
        c = sh.CounterEntry("NetMigrateIngress.decision_counter")
        c.index = index
        cells = [{"packets": e.data.packet_count, "bytes": e.data.byte_count} for e in c.read()]
    finally:
        sh.teardown()
    print(json.dumps(cells))
    """
)


@pytest.fixture(scope="module")
def shell_python() -> Path:
    # Builds the pinned virtualenv when missing (CI); a no-op when it is up to date.
    res = subprocess.run(["bash", str(SETUP), str(VENV)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return VENV / "bin" / "python"


@pytest.fixture
def topo() -> Iterator:
    with veth_topology([1, 2]) as t:
        yield t


def run_shell(python: Path, script: str, *args: str) -> object:
    res = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_p4runtime_shell_drives_the_lab_switch(shell_python, topo, tmp_path):
    device_config = tmp_path / "device_config.bin"
    device_config.write_bytes(DEVICE_CONFIG)
    payload = udp_frame(b"p4runtime-shell packet-out", dst_ip="10.9.0.2", dst_port=9)
    h1 = host_socket(topo.hosts[1])
    h2 = host_socket(topo.hosts[2])
    try:
        with run_switch(*topo.port_args()) as sw:
            out = run_shell(
                shell_python,
                SETUP_AND_WRITE,
                sw.address,
                str(p4info_path()),
                str(device_config),
                payload.hex(),
            )
            assert out == {
                "entries": [
                    {
                        "value": "0a090000",
                        "prefix_len": 24,
                        "action": "NetMigrateIngress.ipv4_forward",
                        "params": {"dst_mac": "020000000902", "port": "02"},
                    }
                ]
            }
            # The packet-out left on port 2.
            assert recv_matching(h2, lambda f: f == payload, timeout=5) == payload

            # A frame through the data plane, then the shell reads the counter it bumped.
            frame = udp_frame(b"data", dst_ip="10.9.0.7", dst_port=9, src_ip="10.9.0.1")
            h1.send(frame)
            forwarded = recv_matching(h2, lambda f: f[14 + 16 : 14 + 20] == bytes([10, 9, 0, 7]))
            assert forwarded is not None, sw.log()
            cells = run_shell(
                shell_python, READ_COUNTER, sw.address, str(int(Decision.PLAIN_FORWARD))
            )
            assert cells == [{"packets": 1, "bytes": len(frame)}]
            # The switch kept the device config the shell sent.
            assert "pipeline committed" in sw.log()
    finally:
        h1.close()
        h2.close()
