"""The scenario's collection is the one built from this checkout, whatever else the machine has.

Runs of molecule on this machine have left links to the checkout they ran in under
~/.ansible/collections (maybe another worktree, at the same version). ansible-galaxy then finds
netmigrate.core "already installed" and installs nothing into the scenario's fresh path, and a
playbook run that reads the default collections path would use the other checkout's roles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from testbed_helpers import REPO_ROOT, install_user_collection

pytestmark = [pytest.mark.slow]


def test_a_collection_in_the_users_home_does_not_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]
    decoy = tmp_path / "other-checkout"
    (decoy / "playbooks").mkdir(parents=True)
    (decoy / "galaxy.yml").write_text(
        f"namespace: netmigrate\nname: core\nversion: {version}\nreadme: README.md\n"
        "authors: [someone]\n"
    )
    (decoy / "README.md").write_text("another checkout\n")
    home = tmp_path / "home"
    linked = home / ".ansible" / "collections" / "ansible_collections" / "netmigrate"
    linked.mkdir(parents=True)
    (linked / "core").symlink_to(decoy)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATH", raising=False)

    collections = install_user_collection(tmp_path / "user")

    installed = collections / "ansible_collections" / "netmigrate" / "core"
    manifest = json.loads((installed / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == version
    assert (installed / "playbooks" / "site.yml").is_file()
    assert (installed / "roles" / "runtime").is_dir()
    # The other checkout is left alone.
    assert sorted(p.name for p in decoy.iterdir()) == ["README.md", "galaxy.yml", "playbooks"]
