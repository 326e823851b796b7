"""`netmigrate migrate` run inside a lab host (a network namespace) cannot reach the lab's
P4Runtime server and agents (127.0.0.1 of the root namespace): it says where to run it."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from netmigrate.migration import MigrationError
from netmigrate.migration.cli import _where_to_run
from netmigrate.netns import current_netns

pytestmark = pytest.mark.root

PROBE = (
    "from netmigrate.migration import MigrationError;"
    "from netmigrate.migration.cli import _where_to_run;"
    "from netmigrate.netns import current_netns;"
    "print(repr(current_netns()));"
    "print(_where_to_run(MigrationError('agent unreachable', code='UNAVAILABLE')))"
)


@pytest.fixture
def namespace(needs_root: None):  # type: ignore[no-untyped-def]
    name = f"nmtw-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_inside_a_lab_host_the_error_says_where_to_run(namespace: str) -> None:
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == repr(namespace)
    assert f"network namespace {namespace!r}" in out[1] and "root namespace" in out[1]


def test_in_the_root_namespace_no_hint(needs_root: None) -> None:
    assert current_netns() == ""
    assert _where_to_run(MigrationError("agent unreachable", code="UNAVAILABLE")) == ""
