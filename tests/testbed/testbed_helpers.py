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


def ansible_playbook(
    playbook: str | Path,
    inventory: Path,
    collections: Path,
    workdir: Path,
    *args: str,
) -> PlaybookRun:
    bindir = Path(sys.executable).parent
    (workdir / "ansible.cfg").write_text("")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp-local"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", str(inventory), str(playbook), *args],
        cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)
