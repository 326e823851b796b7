"""Fixtures for the lab tests: real namespaces under the ``nmt4l-`` prefix, always removed."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmigrate.lab import LabError, Topology, build_topology, cgroups, down
from netmigrate.lab.netns import list_netns

PREFIX_ROOT = "nmt4l"


def _purge(prefix: str) -> None:
    """Last-resort cleanup: whatever a failed test left under ``prefix``."""
    for ns in list_netns():
        if ns.startswith(prefix + "-"):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
    with contextlib.suppress(LabError):
        backend = cgroups.detect()
        for group in (f"nm-lab-{prefix}", f"nm-lab-{prefix}-b"):
            if backend.exists(group):
                backend.remove(group)


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces); CI runs them as root")


@pytest.fixture
def prefix(needs_root: None) -> Iterator[str]:
    # Unique per test, so parallel runs and a previous crashed run never collide.
    name = f"{PREFIX_ROOT}-{secrets.token_hex(2)}"
    try:
        yield name
    finally:
        _purge(name)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def topology(prefix: str) -> Topology:
    return build_topology(prefix, ["a", "b", "c"])


@pytest.fixture
def lab_topology(topology: Topology, run_dir: Path) -> Iterator[Topology]:
    """A lab that is up for the test and down (through the API under test) afterwards."""
    from netmigrate.lab import up

    up(topology, run_dir)
    try:
        yield topology
    finally:
        down(topology, run_dir)
