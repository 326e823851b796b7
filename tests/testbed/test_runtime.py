"""The runtime role on a fresh host that cannot reach any package index (air-gapped).

The host gets its Debian packages first, python3-apt for Ansible's apt module included (a local
mirror would do that on a real air-gapped testbed); then its only route out is removed, and the
role must install netmigrate from the controller's wheelhouse alone, pinned to the collection's
version, and change nothing the second time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from testbed_helpers import REPO_ROOT, ansible_playbook, source_collections, ssh

pytestmark = [pytest.mark.root, pytest.mark.slow]

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
        f"{apt} update && {apt} install python3-apt python3-venv python3-packaging",
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
