"""The runtime role on a fresh host that cannot reach any package index (air-gapped).

The host gets its Debian packages first, python3-apt for Ansible's apt module included (a local
mirror would do that on a real air-gapped testbed); then its only route out is removed, and the
role must install netmigrate from the controller's wheelhouse alone, pinned to the collection's
version, and change nothing the second time. A host asked for an extra later (``bench``, what a
load generator host needs) gets its packages from the wheelhouse too, once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from testbed_helpers import REPO_ROOT, ansible_playbook, source_collections, ssh

# Four playbook runs, one of them builds the bench extra's wheels: above the default limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]

PLAYBOOK = """\
- name: Install netmigrate
  hosts: "{{ target }}"
  gather_facts: false
  vars:
    # As site.yml: the virtualenv the inventory names does not exist yet.
    ansible_python_interpreter: /usr/bin/python3
  roles:
    - role: netmigrate.core.runtime
      runtime_wheelhouse: "{{ netmigrate_wheelhouse }}"
      runtime_extras: "{{ extras | default([]) }}"
"""
#: Any package index: PyPI itself.
PROBE = "import urllib.request as u; u.urlopen('https://pypi.org/simple/', timeout=5)"


def test_runtime_installs_from_the_wheelhouse_without_any_index(
    testbed_up, testbed_state, tmp_path: Path
) -> None:
    host = next(h for h in testbed_state.hosts if h.name.endswith("-redis1"))
    apt = "sudo -n DEBIAN_FRONTEND=noninteractive apt-get -q -y"
    ssh(
        testbed_state,
        host,
        f"{apt} update && {apt} install python3-apt python3-venv",
    )
    subprocess.run(["ip", "-n", host.netns, "route", "del", "default"], check=True)
    probe = subprocess.run(
        ["ip", "netns", "exec", host.netns, "python3", "-c", PROBE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode != 0 and "urlopen error" in probe.stderr, probe.stderr

    playbook = tmp_path / "runtime.yml"
    playbook.write_text(PLAYBOOK)
    collections = source_collections(tmp_path / "collections")
    inventory = Path(testbed_up["inventory"])
    first = ansible_playbook(
        playbook, inventory, collections, tmp_path, "-e", f"target={host.name}"
    )
    assert first.returncode == 0, first.output[-4000:]
    assert first.totals()["changed"] > 0

    version = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]
    venv = "/opt/netmigrate/venv/bin"
    imports = "import netmigrate.agent.cli, redis.asyncio"
    out = ssh(testbed_state, host, f"{venv}/netmigrate --version; {venv}/python -c '{imports}'")
    assert out.strip() == f"netmigrate {version}"

    again = ansible_playbook(
        playbook, inventory, collections, tmp_path, "-e", f"target={host.name}"
    )
    assert again.returncode == 0, again.output[-4000:]
    assert again.totals()["changed"] == 0, again.output[-4000:]

    # The same version without the extra's packages is not "installed" for a host that asks
    # for the extra (Ansible's pip module would say it is).
    bench = "import netmigrate.bench.load.runner, hdrh, matplotlib"
    probe = ssh(testbed_state, host, f"{venv}/python -c '{bench}' 2>&1", check=False)
    assert "No module named" in probe
    extras = ("-e", f"target={host.name}", "-e", '{"extras": ["bench"]}')
    with_bench = ansible_playbook(playbook, inventory, collections, tmp_path, *extras)
    assert with_bench.returncode == 0, with_bench.output[-4000:]
    assert with_bench.totals()["changed"] > 0
    ssh(testbed_state, host, f"{venv}/python -c '{bench}'")
    bench_again = ansible_playbook(playbook, inventory, collections, tmp_path, *extras)
    assert bench_again.returncode == 0, bench_again.output[-4000:]
    assert bench_again.totals()["changed"] == 0, bench_again.output[-4000:]
