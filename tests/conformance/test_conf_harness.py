"""The harness itself: target selection from the environment, the checksum oracle, the layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from nmconf_driver import checksum_problems
from nmconf_harness import HarnessError, config_from_env
from nmconf_world import FrameSpec, nm_layer, nm_of
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netmigrate.protocol.codec import Header
from netmigrate.protocol.constants import HEADER_LEN, Flag, Op

PORTS = "1=eth1,2=ns2:eth0,3=eth3,4=eth4"


def test_default_target_is_the_lab_switch_started_by_the_harness():
    cfg = config_from_env({})
    assert (cfg.kind, cfg.device_id, cfg.grpc_addr) == ("lab", 1, None)
    assert cfg.p4blob == b""


def test_bmv2_needs_its_json_and_defaults_to_device_0(tmp_path: Path):
    with pytest.raises(HarnessError, match="NETMIGRATE_BMV2_JSON"):
        config_from_env({"NETMIGRATE_CONFORMANCE_TARGET": "bmv2"})
    compiled = tmp_path / "netmigrate.json"
    compiled.write_text('{"program": "x"}')
    cfg = config_from_env(
        {
            "NETMIGRATE_CONFORMANCE_TARGET": "bmv2",
            "NETMIGRATE_BMV2_JSON": str(compiled),
            "NETMIGRATE_CONFORMANCE_GRPC": "127.0.0.1:9559",
            "NETMIGRATE_CONFORMANCE_PORTS": PORTS,
        }
    )
    assert (cfg.kind, cfg.device_id, cfg.grpc_addr) == ("bmv2", 0, "127.0.0.1:9559")
    assert cfg.ports == {
        1: (None, "eth1"),
        2: ("ns2", "eth0"),
        3: (None, "eth3"),
        4: (None, "eth4"),
    }
    assert cfg.p4blob == b'{"program": "x"}'


def test_managed_bmv2_needs_the_binary(tmp_path: Path):
    compiled = tmp_path / "netmigrate.json"
    compiled.write_text("{}")
    env = {
        "NETMIGRATE_CONFORMANCE_TARGET": "bmv2",
        "NETMIGRATE_BMV2_JSON": str(compiled),
        "NETMIGRATE_BMV2_SWITCH": str(tmp_path / "missing"),
    }
    with pytest.raises(HarnessError, match="no simple_switch_grpc"):
        config_from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NETMIGRATE_CONFORMANCE_TARGET": "tofino"}, "want 'lab' or 'bmv2'"),
        ({"NETMIGRATE_CONFORMANCE_DEVICE_ID": "one"}, "not a number"),
        ({"NETMIGRATE_CONFORMANCE_PORTS": PORTS}, "only used with"),
        (
            {"NETMIGRATE_CONFORMANCE_GRPC": "x:1", "NETMIGRATE_CONFORMANCE_PORTS": "1=a,2=b"},
            r"ports \[3, 4\] are not mapped",
        ),
        (
            {"NETMIGRATE_CONFORMANCE_GRPC": "x:1", "NETMIGRATE_CONFORMANCE_PORTS": "one=a"},
            "bad item",
        ),
    ],
)
def test_bad_target_settings_are_explained(env: dict[str, str], message: str):
    with pytest.raises(HarnessError, match=message):
        config_from_env(env)


def test_checksum_oracle_accepts_valid_and_zero_udp_and_flags_broken_ones():
    spec = FrameSpec(
        eth_src="02:00:00:00:00:01",
        eth_dst="02:00:00:00:00:02",
        ip_src="10.0.0.1",
        ip_dst="10.0.0.2",
        sport=1,
        dport=2,
        payload=b"data",
    )
    assert checksum_problems(bytes(spec.build())) == []
    no_sum = Ether(bytes(spec.build()))
    no_sum[UDP].chksum = 0
    assert checksum_problems(bytes(no_sum)) == []
    bad_udp = bytearray(bytes(spec.build()))
    bad_udp[-1] ^= 0xFF  # payload changed, checksum not
    assert checksum_problems(bytes(bad_udp)) == [
        f"bad UDP checksum {bad_udp[40:42].hex()} (neither 0 nor valid)"
    ]
    bad_ip = Ether(bytes(spec.build()))
    bad_ip[IP].chksum ^= 1
    assert any("IPv4" in p for p in checksum_problems(bytes(bad_ip)))


def test_shared_scapy_layer_and_codec_agree_on_the_header():
    header = Header(
        op=Op.MSET,
        request_id=0x0102030405060708,
        keyspace=0xBEEF,
        slot=16383,
        flags=Flag.RETRY | Flag.TO_TARGET,
        source_id=3,
        target_id=254,
    )
    assert bytes(nm_layer(header)) == header.pack()
    assert len(header.pack()) == HEADER_LEN
    frame = bytes(Ether() / IP() / UDP(dport=50000) / nm_layer(header))
    assert nm_of(frame) == header
