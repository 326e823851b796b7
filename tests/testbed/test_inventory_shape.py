"""The inventory the harness writes has the shape of inventory/testbed.example (no root needed):
what CI runs is what a user copies. Also the template cache key."""

from __future__ import annotations

from pathlib import Path

import yaml
from testbed_helpers import REPO_ROOT

from netmigrate.testbed.harness import DATA_HOSTS, topology_of
from netmigrate.testbed.inventory import InventoryHost, write_inventory
from netmigrate.testbed.template import TEMPLATE_PACKAGES, TemplateSpec

EXAMPLE = REPO_ROOT / "inventory" / "testbed.example"


def _written(tmp_path: Path) -> tuple[dict, dict]:
    topo = topology_of("nmtbx")
    out = write_inventory(
        tmp_path / "inventory",
        switch=InventoryHost("nmtbx-sw", "10.9.0.10"),
        data_hosts=[
            InventoryHost(f"nmtbx-{h.name}", f"10.9.0.{11 + i}", h)
            for i, h in enumerate(topo.hosts)
        ],
        topology=topo,
        private_key=tmp_path / "id",
        known_hosts=tmp_path / "known_hosts",
        state_dir=tmp_path,
        user="netmigrate",
    )
    hosts = yaml.safe_load((out / "hosts.yml").read_text())
    group_vars = yaml.safe_load((out / "group_vars" / "all.yml").read_text())
    return hosts, group_vars


def _example() -> tuple[dict, dict]:
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    group_vars = yaml.safe_load((EXAMPLE / "group_vars" / "all.yml").read_text())
    return hosts, group_vars


def test_same_variables_as_the_example(tmp_path: Path) -> None:
    hosts, group_vars = _written(tmp_path)
    ex_hosts, ex_group_vars = _example()
    # The same knobs; only values differ (addresses, paths, a secret file for the vault).
    assert set(group_vars) == set(ex_group_vars)
    for group in ("switches", "clients", "redis_nodes"):
        mine = hosts["all"]["children"][group]["hosts"]
        theirs = ex_hosts["all"]["children"][group]["hosts"]
        assert {k for v in mine.values() for k in v} == {k for v in theirs.values() for k in v}
    connection = {"ansible_ssh_private_key_file", "ansible_ssh_common_args"}
    assert set(hosts["all"]["vars"]) - connection == set(ex_hosts["all"]["vars"])


def test_secret_is_a_file_reference_not_a_value(tmp_path: Path) -> None:
    _, group_vars = _written(tmp_path)
    secret = (tmp_path / "secrets" / "redis-agent-password").read_text()
    assert len(secret) == 32
    assert (tmp_path / "secrets" / "redis-agent-password").stat().st_mode & 0o077 == 0
    text = (tmp_path / "inventory" / "group_vars" / "all.yml").read_text()
    assert secret not in text and "lookup('ansible.builtin.file'" in text
    assert group_vars["netmigrate_migration_report_dir"].startswith(str(tmp_path))


def test_redis_hosts_get_server_ids_in_port_order(tmp_path: Path) -> None:
    hosts, _ = _written(tmp_path)
    redis = hosts["all"]["children"]["redis_nodes"]["hosts"]
    assert [v["netmigrate_server_id"] for v in redis.values()] == [1, 2, 3]
    assert [v["netmigrate_switch_port"] for v in redis.values()] == [2, 3, 4]
    assert len(DATA_HOSTS) == 4


def test_template_key_follows_the_package_list() -> None:
    base = TemplateSpec()
    assert base.key == TemplateSpec(packages=tuple(reversed(TEMPLATE_PACKAGES))).key
    assert base.key != TemplateSpec(packages=(*TEMPLATE_PACKAGES, "vim")).key
    assert base.key.startswith("bookworm-")
