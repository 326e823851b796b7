"""Fixtures for tests that drive the collection netmigrate.core through the real Ansible CLI
(helpers in collection_helpers.py). Every namespace, process and file a fixture makes is
removed afterwards, also when the test fails."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from collection_helpers import NETNS_PREFIX, Ansible, delete_netns

from netmigrate.bench.redis_server import RedisServer, start_redis


@pytest.fixture
def ansible(tmp_path: Path) -> Ansible:
    return Ansible(tmp_path)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace ``nmt6-…`` with ``lo`` up; removed with its processes."""
    name = f"{NETNS_PREFIX}{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def redis_cluster_node() -> Iterator[RedisServer]:
    """A fresh cluster-mode redis-server on free ports of 127.0.0.1 (no slots yet)."""
    server = asyncio.run(start_redis(cluster=True))
    try:
        yield server
    finally:
        server.stop()
