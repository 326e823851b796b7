"""The testbed path end to end, as a user runs it (issue 13).

Fresh hosts -> the collection built with ``ansible-galaxy collection build`` and installed into a
fresh collections path -> ``netmigrate.core.site`` over SSH with become -> a migration under
client load with ``netmigrate.core.migrate`` (history checker clean, no client error) -> site
and migrate again with nothing changed -> units killed with SIGKILL come back by themselves ->
``netmigrate.core.site`` restores the restarted switch, slot map included, and
``netmigrate.core.reconcile`` finds nothing left -> a changed setting restarts only its
unit -> every unit of ours active, no secret anywhere. The tests of this module run in order
on one testbed; the module's teardown removes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path

import pytest
import yaml
from support.p4rt_clients import p4runtime_opens
from testbed_helpers import PlaybookRun, ansible_playbook, install_user_collection, ssh

from netmigrate.p4rt import TlsOptions

# Above the playbooks' own limit (testbed_helpers.PLAYBOOK_TIMEOUT), which keeps their output.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]

SCENARIO = Path(__file__).parent / "playbooks" / "migrate_under_load.yml"
VENV = "/opt/netmigrate/venv/bin"
#: Every unit of ours per kind of host.
UNITS = {
    "sw": ["netmigrate-lab-switch.service"],
    "redis": ["netmigrate-redis-{host}.service", "netmigrate-agent-{host}.service"],
}
#: The user each unit runs as (its own, never root).
USERS = {
    "netmigrate-lab-switch.service": "netmigrate-switch",
    "netmigrate-redis-{host}.service": "redis",
    "netmigrate-agent-{host}.service": "netmigrate-agent",
}
#: What the SIGKILL test kills: the switch, both agents of the migration and the Redis of a
#: server that holds no data (a killed Redis of the others would lose keys: no persistence).
KILLED = {
    "sw": ["netmigrate-lab-switch.service"],
    "redis1": ["netmigrate-agent-{host}.service"],
    "redis2": ["netmigrate-agent-{host}.service"],
    "redis3": ["netmigrate-redis-{host}.service"],
}
_outputs: list[str] = []


@pytest.fixture(scope="module")
def user_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as a user gets it: built, then installed into a fresh path."""
    return install_user_collection(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def run(testbed_up, user_collection: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("ansible")
    inventory = Path(testbed_up["inventory"])

    def play(playbook: str | Path, *args: str) -> PlaybookRun:
        result = ansible_playbook(playbook, inventory, user_collection, workdir, *args)
        _outputs.append(result.output)
        assert result.returncode == 0, result.output[-6000:]
        return result

    return play


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _units(record, table: dict[str, list[str]] | None = None) -> list[str]:
    role = record.name.split("-", 1)[1]
    if table is None:
        table, role = UNITS, ("redis" if role.startswith("redis") else role)
    return [u.format(host=record.name) for u in table.get(role, [])]


def test_site_provisions_fresh_hosts(run, testbed_state, user_collection) -> None:
    before = _tree_digest(user_collection)
    t0 = time.monotonic()
    first = run("netmigrate.core.site")
    print(f"site.yml on fresh hosts: {time.monotonic() - t0:.0f} s")
    assert first.totals()["changed"] > 0
    # Nothing is written inside the installed collection (wheels and reports live elsewhere).
    assert _tree_digest(user_collection) == before
    # The client host runs the load generator: its virtualenv has the bench extra (without
    # it the load exits at once and the migration's playbook waits for it in vain).
    client = next(h for h in testbed_state.hosts if h.name.endswith("-client"))
    ssh(testbed_state, client, f"{VENV}/python -c 'import netmigrate.bench.load.runner'")


def test_migration_under_load_is_clean(run, testbed_up) -> None:
    t0 = time.monotonic()
    run(SCENARIO)
    print(f"migration under load: {time.monotonic() - t0:.0f} s")
    reports = list(Path(testbed_up["state_dir"], "reports", "migrations").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["slots_done"] == 4096 and report["keys_copied"] > 0


def _main_pids(state) -> dict[str, str]:
    """Every unit of ours -> its main process id (restarted: another one)."""
    return {
        unit: ssh(state, host, f"systemctl show -P MainPID {unit}").strip()
        for host in state.hosts
        for unit in _units(host)
    }


def test_site_and_migrate_again_change_nothing(run, testbed_state) -> None:
    before = _main_pids(testbed_state)
    assert run("netmigrate.core.site").totals()["changed"] == 0
    assert run("netmigrate.core.migrate").totals()["changed"] == 0
    # Nothing changed, nothing restarted.
    assert _main_pids(testbed_state) == before


def test_units_killed_with_sigkill_come_back(testbed_state) -> None:
    for host in testbed_state.hosts:
        for unit in _units(host, KILLED):
            pid = ssh(testbed_state, host, f"systemctl show -P MainPID {unit}").strip()
            assert pid != "0", f"{unit} on {host.name} does not run"
            ssh(testbed_state, host, f"sudo -n kill -KILL {pid}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = ssh(testbed_state, host, f"systemctl show -P MainPID {unit}").strip()
                state = ssh(testbed_state, host, f"systemctl is-active {unit}", check=False)
                if now not in ("0", pid) and state.strip() == "active":
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"{unit} on {host.name} did not come back after SIGKILL")


def test_site_restores_the_switch_after_a_restart(run) -> None:
    # The lab switch restarted empty: site.yml reinstalls the pipeline and entries and rebuilds
    # the slot map from the agents. It once stopped at the pipeline, and the switch sent the
    # migrated slots to their old owner until reconcile.yml ran too.
    t0 = time.monotonic()
    restored = run("netmigrate.core.site")
    print(f"site.yml after a switch restart: {time.monotonic() - t0:.0f} s")
    assert restored.totals()["changed"] > 0
    # The migrated slots went back to server 2 (the reconcile step's report).
    assert re.search(r"changed 4096 of \d+ slots", restored.output), restored.output[-4000:]
    # Nothing is left for reconcile.yml; what migrate.yml checks after a migration holds again
    # (finalize verifies on the switch that the slots go to server 2).
    assert run("netmigrate.core.reconcile").totals()["changed"] == 0
    assert run("netmigrate.core.migrate").totals()["changed"] == 0


def test_a_changed_setting_restarts_only_its_unit(run, testbed_state) -> None:
    # A setting of the switch alone (a fault that changes nothing: no loss, no delay): its unit
    # restarts, no other; the restarted switch is empty and the same run restores it.
    before = _main_pids(testbed_state)
    changed = run("netmigrate.core.site", "-e", '{"netmigrate_lab_switch_faults": ["4:drop=0"]}')
    after = _main_pids(testbed_state)
    restarted = sorted(unit for unit in before if after[unit] != before[unit])
    assert restarted == ["netmigrate-lab-switch.service"], restarted
    assert re.search(r"changed 4096 of \d+ slots", changed.output), changed.output[-4000:]
    assert run("netmigrate.core.migrate").totals()["changed"] == 0


def _key_body(path: Path) -> str:
    """The first line of a PEM key's base64 (64 characters): what a leak would show."""
    return path.read_text().splitlines()[1]


def test_the_switch_refuses_clients_without_a_certificate(testbed_up) -> None:
    group_vars = yaml.safe_load(Path(testbed_up["inventory"], "group_vars", "all.yml").read_text())
    assert group_vars["netmigrate_p4runtime_tls"] is True
    address = group_vars["netmigrate_p4runtime_address"]
    pki = Path(testbed_up["inventory"], "pki-p4runtime")

    # Only a certificate of the P4Runtime CA opens the switch; the agents' CA does not.
    client = TlsOptions(
        pki / "ca.pem", pki / "ansible-controller.pem", pki / "ansible-controller.key"
    )
    assert asyncio.run(p4runtime_opens(address, client))
    assert not asyncio.run(p4runtime_opens(address, None))
    assert not asyncio.run(p4runtime_opens(address, TlsOptions(ca=pki / "ca.pem")))
    control = Path(testbed_up["inventory"], "pki")
    agent = next(control.glob("agent-*.pem"))
    assert not asyncio.run(
        p4runtime_opens(address, TlsOptions(pki / "ca.pem", agent, agent.with_suffix(".key")))
    )


def test_every_unit_is_active_and_no_secret_leaks(testbed_state, testbed_up) -> None:
    secret = (Path(testbed_state.state_dir) / "secrets" / "redis-agent-password").read_text()
    assert len(secret) >= 16
    # The private keys the playbooks installed: the switch's and the controller host's.
    keys = [_key_body(k) for k in Path(testbed_up["inventory"], "pki-p4runtime").glob("*.key")]
    keys = [k for k in keys if k]
    assert len(keys) >= 3  # the CA, the switch, the controller host (and the Ansible controller)
    for host in testbed_state.hosts:
        for unit in _units(host):
            assert ssh(testbed_state, host, f"systemctl is-active {unit}").strip() == "active"
            user = ssh(testbed_state, host, f"systemctl show -P User {unit}").strip()
            expected = USERS[unit.replace(host.name, "{host}")]
            assert user == expected, f"{unit} on {host.name} runs as {user!r}"
        leaks = ssh(
            testbed_state, host,
            "sudo -n sh -c 'cat /etc/systemd/system/netmigrate-*.service; ps -eo args; "
            "journalctl --no-pager -o cat'",
        )  # fmt: skip
        assert leaks.strip(), f"nothing read on {host.name}"
        assert secret not in leaks, f"the agent password leaks on {host.name}"
        assert not [k for k in keys if k in leaks], f"a P4Runtime key leaks on {host.name}"
    assert _outputs and all(secret not in out for out in _outputs)
    assert all(k not in out for out in _outputs for k in keys)
