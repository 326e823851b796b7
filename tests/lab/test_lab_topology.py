"""The topology plan as data: documented defaults, determinism, validation, JSON."""

from __future__ import annotations

import pytest

from netmigrate.lab import LabError, Topology, build_topology
from netmigrate.protocol.constants import LAB_MTU


def test_default_plan_matches_the_documented_layout():
    topo = build_topology()
    assert topo.switch_netns == "nm-sw"
    assert topo.netns_names == ("nm-sw", "nm-client", "nm-redis1", "nm-redis2", "nm-redis3")
    assert topo.gateway == "10.0.0.1"
    assert topo.mtu == LAB_MTU == 9000
    plan = {h.name: (h.netns, h.ip, h.switch_port, h.switch_iface) for h in topo.hosts}
    assert plan == {
        "client": ("nm-client", "10.0.0.10", 1, "s1-client"),
        "redis1": ("nm-redis1", "10.0.0.11", 2, "s2-redis1"),
        "redis2": ("nm-redis2", "10.0.0.12", 3, "s3-redis2"),
        "redis3": ("nm-redis3", "10.0.0.13", 4, "s4-redis3"),
    }
    assert topo.host("redis2").mac == "02:4e:4d:00:00:0c"
    assert topo.host("redis2").switch_mac == "02:4e:4d:ff:00:03"
    assert topo.switch_ports() == {1: "s1-client", 2: "s2-redis1", 3: "s3-redis2", 4: "s4-redis3"}


def test_plan_is_deterministic_and_macs_are_unique_unicast_local():
    a = build_topology("x", ["h1", "h2", "h3"])
    b = build_topology("x", ["h1", "h2", "h3"])
    assert a == b
    macs = [h.mac for h in a.hosts] + [h.switch_mac for h in a.hosts]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast


def test_routes_derive_the_ipv4_lpm_entries():
    topo = build_topology("x", ["a", "b"])
    assert topo.routes() == [
        ("10.0.0.10/32", "02:4e:4d:00:00:0a", 1),
        ("10.0.0.11/32", "02:4e:4d:00:00:0b", 2),
    ]
    assert topo.host_by_port(2).name == "b"
    with pytest.raises(LabError):
        topo.host_by_port(3)
    with pytest.raises(LabError, match="no host 'z'"):
        topo.host("z")


def test_long_host_names_keep_interface_names_within_ifnamsiz():
    topo = build_topology("x", ["averyveryverylonghostname", "averyveryverylonghostname2"])
    ifaces = [h.switch_iface for h in topo.hosts]
    assert all(len(i) <= 15 for i in ifaces)
    assert len(set(ifaces)) == 2


def test_custom_subnet_and_mtu():
    topo = build_topology("x", ["a"], subnet="192.168.7.0/24", mtu=1500)
    assert topo.host("a").ip == "192.168.7.10"
    assert topo.gateway == "192.168.7.1"
    assert topo.mtu == 1500
    assert topo.prefix_len == 24


@pytest.mark.parametrize(
    ("prefix", "hosts", "kwargs", "message"),
    [
        ("Bad", ["a"], {}, "invalid lab prefix"),
        ("x", [], {}, "at least one host"),
        ("x", ["a", "a"], {}, "duplicate"),
        ("x", ["sw"], {}, "invalid host name"),
        ("x", ["a b"], {}, "invalid host name"),
        ("x", ["a"], {"mtu": 100}, "MTU"),
        ("x", ["a"], {"subnet": "10.0.0.0/30"}, "too small"),
        ("x", ["a"], {"subnet": "fd00::/64"}, "IPv4"),
        ("x", ["a"], {"subnet": "nonsense"}, "invalid subnet"),
    ],
)
def test_bad_parameters_are_rejected(prefix, hosts, kwargs, message):
    with pytest.raises(LabError, match=message):
        build_topology(prefix, hosts, **kwargs)


def test_json_round_trip_and_bad_json():
    topo = build_topology("x", ["a", "b"], bare=True)
    again = Topology.from_json(topo.to_json())
    assert again == topo
    assert again.bare
    with pytest.raises(LabError, match="invalid topology JSON"):
        Topology.from_json("{")
    with pytest.raises(LabError, match="invalid topology description"):
        Topology.from_json('{"prefix": "x"}')
