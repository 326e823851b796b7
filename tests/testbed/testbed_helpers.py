"""Helpers of the testbed tests (constants shared with conftest.py, SSH to a host)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from netmigrate.testbed.harness import HostRecord, TestbedState, ssh_argv

PREFIX = "nmtbt"
MGMT_SUBNET = "10.214.0.0/24"
STATE_ROOT = Path("/var/lib/netmigrate-testbed-tests")
#: A playbook that runs longer has hung; below the scenario's pytest timeout, so that its
#: output is kept (see ansible_playbook).
PLAYBOOK_TIMEOUT = 480.0


def ssh(state: TestbedState, record: HostRecord, command: str, *, check: bool = True) -> str:
    proc = subprocess.run(
        ssh_argv(Path(state.state_dir), record, command),
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"{record.name}: `{command}` exit {proc.returncode}: {proc.stderr}")
    return proc.stdout


REPO_ROOT = Path(__file__).resolve().parents[2]
_RECAP = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def totals(self) -> dict[str, int]:
        """PLAY RECAP counters summed over hosts."""
        out: dict[str, int] = {}
        recap = self.output.split("PLAY RECAP", 1)[-1]
        for line in recap.splitlines():
            m = _RECAP.match(line.strip())
            if m:
                for item in m[2].split():
                    key, value = item.split("=")
                    out[key] = out.get(key, 0) + int(value)
        return out


def source_collections(workdir: Path) -> Path:
    """A collections path whose netmigrate.core is this source tree (as in tests/collection)."""
    tree = workdir / "ansible_collections" / "netmigrate"
    tree.mkdir(parents=True, exist_ok=True)
    link = tree / "core"
    if not link.exists():
        link.symlink_to(REPO_ROOT)
    return workdir


def isolated_ansible_env(collections: Path, workdir: Path) -> dict[str, str]:
    """An environment in which Ansible sees only ``collections`` and reads no configuration.

    A netmigrate.core elsewhere on the machine (molecule runs have left links to their checkout
    in ~/.ansible/collections, maybe another worktree's) must not stand in for
    the collection under test: ``ansible-galaxy collection install`` would find it "already
    installed" and install nothing, and a playbook run would use its roles.
    """
    bindir = Path(sys.executable).parent
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ansible.cfg").write_text("")
    return {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp-local"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }


def install_user_collection(work: Path) -> Path:
    """The collection as a user gets it: built, then installed into a fresh collections path
    under ``work`` (returned)."""
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    collections = work / "collections"
    env = isolated_ansible_env(collections, work)
    subprocess.run(
        [str(galaxy), "collection", "build", "--output-path", str(work), str(REPO_ROOT)],
        check=True, capture_output=True, env=env, cwd=work,
    )  # fmt: skip
    tarball = next(work.glob("netmigrate-core-*.tar.gz"))
    subprocess.run(
        # --force as well: installed is what this path holds, whatever else the machine has.
        [str(galaxy), "collection", "install", "--force", "-p", str(collections), str(tarball)],
        check=True, capture_output=True, env=env, cwd=work,
    )  # fmt: skip
    return collections


def ansible_playbook(
    playbook: str | Path,
    inventory: Path,
    collections: Path,
    workdir: Path,
    *args: str,
    timeout: float = PLAYBOOK_TIMEOUT,
) -> PlaybookRun:
    bindir = Path(sys.executable).parent
    env = isolated_ansible_env(collections, workdir)
    argv = [str(bindir / "ansible-playbook"), "-i", str(inventory), str(playbook), *args]
    try:
        proc = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, check=False,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        # What the playbook printed until then says where it hung (a pytest timeout would
        # kill it and lose that).
        out = "".join(_text(part) for part in (exc.stdout, exc.stderr))
        return PlaybookRun(-9, f"{out}\n{playbook} timed out after {timeout:.0f} s")
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def _text(part: str | bytes | None) -> str:
    if part is None:
        return ""
    return part.decode(errors="replace") if isinstance(part, bytes) else part
