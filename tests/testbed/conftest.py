"""Fixtures for the testbed tests: a testbed of fresh hosts per module (prefix ``nmtbt``), removed.

The template tree is cached in /var/cache/netmigrate/testbed (the first run ever builds it with
debootstrap, ~85 s, from Debian's mirror). Its own management subnet keeps it apart from a
testbed a developer has up under the default prefix.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed_helpers import MGMT_SUBNET, PREFIX, STATE_ROOT

from netmigrate.testbed import harness
from netmigrate.testbed.harness import TestbedState

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install debootstrap systemd-container nftables")


@pytest.fixture(scope="module")
def testbed_up() -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.fail("the testbed tests need root (namespaces, mounts, systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "nft"):
        _needs(tool)
    # A run that crashed before its teardown left a testbed behind: remove it first.
    harness.down(PREFIX, state_root=STATE_ROOT)
    before = IP_FORWARD.read_text().strip()
    try:
        yield harness.up(PREFIX, state_root=STATE_ROOT, mgmt_subnet=MGMT_SUBNET) | {
            "ip_forward_before": before
        }
    finally:
        harness.down(PREFIX, state_root=STATE_ROOT)


@pytest.fixture(scope="module")
def testbed_state(testbed_up: dict) -> TestbedState:
    state = TestbedState.load(Path(testbed_up["state_dir"]))
    assert state is not None
    return state
