"""The template Debian tree every testbed host is an overlay of.

Made once with ``debootstrap`` and cached outside the repository under a key derived from what
goes into it (suite, mirror, package list), so a second ``testbed up`` skips the ~85 s build. A
tree is built under a temporary name and renamed when complete: an interrupted build is never
mistaken for a template.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from netmigrate.testbed.errors import TestbedError

DEFAULT_CACHE_DIR = Path("/var/cache/netmigrate/testbed")
#: What a fresh server has: an init system, a bus, SSH, Python for Ansible, sudo for `become`
#: and iproute2. Nothing of ours; the collection installs the rest.
TEMPLATE_PACKAGES: tuple[str, ...] = (
    "dbus",
    "iproute2",
    "openssh-server",
    "python3",
    "sudo",
    "systemd",
    "systemd-sysv",
)
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: The account the controller logs in as (with `become` through sudo), as on a real server.
ADMIN_USER = "netmigrate"


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = TEMPLATE_PACKAGES
    admin_user: str = ADMIN_USER

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self) | {"packages": sorted(self.packages)}, sort_keys=True)
        return f"{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def template_path(spec: TemplateSpec, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    return cache_dir / spec.key


def ensure_template(spec: TemplateSpec, cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[Path, bool]:
    """The template tree of ``spec``, built when missing; returns (path, built now)."""
    final = template_path(spec, cache_dir)
    if (final / "etc" / "os-release").exists():
        return final, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    build = cache_dir / f"{spec.key}.tmp"
    if build.exists():
        shutil.rmtree(build)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(sorted(spec.packages))}",
        spec.suite,
        str(build),
        spec.mirror,
    ]
    _run(argv, what="debootstrap")
    _prepare(build, spec)
    build.rename(final)
    return final, True


def _prepare(root: Path, spec: TemplateSpec) -> None:
    """Make the tree a template: no identity of its own, an admin account, sshd enabled."""
    # Each host gets its own machine-id (systemd writes one at first boot into an empty file)
    # and its own SSH host keys (written per host before it boots).
    (root / "etc" / "machine-id").write_text("")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    _run(
        ["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash",
         spec.admin_user],
        what="useradd",
    )  # fmt: skip
    sudoers = root / "etc" / "sudoers.d" / spec.admin_user
    sudoers.write_text(f"{spec.admin_user} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    # apt's package lists are downloaded by whoever provisions the host, as on a new server.
    for lists in (root / "var" / "lib" / "apt" / "lists").glob("*_Packages"):
        lists.unlink()
    (root / "etc" / "apt" / "sources.list").write_text(
        f"deb {spec.mirror} {spec.suite} main\n"
        f"deb {spec.mirror} {spec.suite}-updates main\n"
        f"deb {spec.mirror.rsplit('/', 1)[0]}/debian-security {spec.suite}-security main\n"
    )


def _run(argv: list[str], *, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise TestbedError(f"{argv[0]}: command not found (apt-get install {what}?)") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise TestbedError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout
