"""One testbed host: an overlay of the template, its identity, and systemd-nspawn booting it.

Each host boots with systemd as PID 1 in a network namespace made beforehand (the lab's, so the
data network is wired as in the lab). This machine has no system bus, hence ``--keep-unit
--register=no``: nspawn neither asks machined to register the host nor systemd for a scope.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from netmigrate.testbed.errors import TestbedError
from netmigrate.testbed.template import ADMIN_USER


@dataclass(frozen=True, slots=True)
class HostPaths:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def console(self) -> Path:
        return self.base / "console.log"


def mount_overlay(template: Path, paths: HostPaths) -> None:
    for d in (paths.upper, paths.work, paths.root):
        d.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(paths.root):
        return
    opts = f"lowerdir={template},upperdir={paths.upper},workdir={paths.work}"
    _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(paths.root)])


def unmount(path: Path) -> bool:
    """Unmount ``path`` and anything mounted below it; True when something was mounted."""
    targets = [m for m in _mounts() if m == path or path in m.parents]
    for target in sorted(targets, key=lambda p: len(p.parts), reverse=True):
        proc = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            # A process that still holds it must not keep the template's overlay alive.
            _run(["umount", "--lazy", str(target)])
    return bool(targets)


def mounts_below(path: Path) -> list[Path]:
    return [m for m in _mounts() if path in m.parents]


def _mounts() -> list[Path]:
    out: list[Path] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1:
            out.append(Path(fields[1].replace("\\040", " ")))
    return out


def set_identity(root: Path, hostname: str, authorized_key: str) -> str:
    """Hostname, own SSH host keys, the controller's key; returns the host's ed25519 public key.

    The machine-id stays empty in the template, so systemd makes a new one at first boot.
    """
    (root / "etc" / "hostname").write_text(f"{hostname}\n")
    (root / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    _run(["ssh-keygen", "-A", "-f", str(root)])
    uid, gid = _ids(root, ADMIN_USER)
    ssh_dir = root / "home" / ADMIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(authorized_key.strip() + "\n")
    keys.chmod(0o600)
    for p in (ssh_dir, keys):
        os.chown(p, uid, gid)
    return (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise TestbedError(f"the template has no user {user}")


def boot(root: Path, machine: str, netns: str, console: Path) -> int:
    """Start ``systemd-nspawn -b`` for ``root`` in ``netns``; returns nspawn's pid."""
    argv = [
        "systemd-nspawn",
        "--boot",
        "--keep-unit",
        "--register=no",
        f"--directory={root}",
        f"--machine={machine}",
        f"--network-namespace-path=/run/netns/{netns}",
        "--resolv-conf=copy-host",
        "--timezone=off",
        "--console=pipe",
    ]
    with console.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return proc.pid


def is_our_nspawn(pid: int, machine: str) -> bool:
    """True when ``pid`` is the nspawn of ``machine`` (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(argv)
        and argv[0].endswith(b"systemd-nspawn")
        and f"--machine={machine}".encode() in argv
    )


def leader_pid(nspawn_pid: int) -> int | None:
    """The host's PID 1 (systemd) as seen from the root namespace."""
    children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children")
    with contextlib.suppress(OSError):
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
    return None


def power_off(machines: list[tuple[int, str]], timeout: float = 30.0) -> list[str]:
    """Shut hosts down cleanly, all at once; returns the machines that were running.

    SIGTERM makes nspawn ask the host's systemd to halt; SIGKILL for one that hangs.
    """
    running = [(pid, m) for pid, m in machines if pid and is_our_nspawn(pid, m)]
    left = list(running)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            for pid, _ in left:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            left = [(pid, m) for pid, m in left if is_our_nspawn(pid, m)]
            time.sleep(0.1)
        if not left:
            return [m for _, m in running]
    raise TestbedError(f"systemd-nspawn does not exit for {[m for _, m in left]}")


def remove_tree(path: Path) -> None:
    if mounts_below(path) or os.path.ismount(path):
        raise TestbedError(f"{path} still has mounts; refusing to delete it")
    shutil.rmtree(path, ignore_errors=False)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout
