"""Helpers for tests that drive the collection netmigrate.core through the real Ansible CLI.

Every test gets an isolated Ansible: the repository (the collection root) is linked into a
temporary ``ansible_collections/netmigrate/core`` tree, ANSIBLE_CONFIG points at an empty file
(no ansible.cfg of the working tree leaks in) and the temp directories are private. Modules
run with this interpreter (the .venv), which has the netmigrate package.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_PREFIX = "nmt6-"
_RECAP = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


@dataclass
class AnsibleRun:
    returncode: int
    stdout: str
    stderr: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host (ok, changed, failed, ...)."""
        hosts: dict[str, dict[str, int]] = {}
        in_recap = False
        for line in self.stdout.splitlines():
            if line.startswith("PLAY RECAP"):
                in_recap = True
                continue
            m = _RECAP.match(line.strip()) if in_recap else None
            if m:
                counts = dict(item.split("=") for item in m[2].split())
                hosts[m[1]] = {k: int(v) for k, v in counts.items()}
        return hosts

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.recap().values():
            for key, value in counts.items():
                out[key] = out.get(key, 0) + value
        return out

    def text(self) -> str:
        return self.stdout + self.stderr


class Ansible:
    """Runs ``ansible`` and ``ansible-playbook`` of this interpreter's environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        tree = workdir / "collections" / "ansible_collections" / "netmigrate"
        tree.mkdir(parents=True)
        (tree / "core").symlink_to(REPO_ROOT)
        config = workdir / "ansible.cfg"
        config.write_text("")
        bindir = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(workdir / "collections"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp-local"),
            "ANSIBLE_REMOTE_TEMP": str(workdir / "tmp-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        }
        self.env.pop("ANSIBLE_COLLECTIONS_PATHS", None)
        self._bindir = bindir

    def write(self, name: str, content: Any) -> Path:
        path = self.workdir / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    def _run(self, argv: list[str], timeout: float) -> AnsibleRun:
        proc = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return AnsibleRun(proc.returncode, proc.stdout, proc.stderr)

    def playbook(
        self, playbook: Path, inventory: Path | str, *args: str, timeout: float = 240
    ) -> AnsibleRun:
        argv = [str(self._bindir / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        return self._run([*argv, *args], timeout)

    def adhoc(self, pattern: str, inventory: Path | str, *args: str) -> AnsibleRun:
        return self._run([str(self._bindir / "ansible"), pattern, "-i", str(inventory), *args], 120)


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def delete_netns(name: str) -> None:
    """Kill what runs in the namespace (a deleted namespace keeps its processes), delete it."""
    for pid in _netns_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def redis_cli(netns_name: str, port: int, *command: str, user: str, password: str) -> str:
    """``redis-cli`` inside a namespace; the password goes through the environment."""
    cli = shutil.which("redis-cli")
    assert cli, "redis-cli not found (Debian package redis-tools)"
    proc = subprocess.run(
        ["ip", "netns", "exec", netns_name, cli, "-p", str(port), "--user", user, *command],
        env={**os.environ, "REDISCLI_AUTH": password},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return proc.stdout
