"""Helpers of the testbed tests (constants shared with conftest.py, SSH to a host)."""

from __future__ import annotations

import subprocess
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
