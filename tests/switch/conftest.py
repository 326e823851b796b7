"""Fixtures for the lab switch tests: the real ``netmigrate switch`` process, finsy clients,
and namespaces under the ``nmt3-`` prefix (always removed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from netmigrate.lab.switch_process import SwitchProcess, run_switch
from netmigrate.lab.veth_topology import VethTopology, veth_topology


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (network namespaces, AF_PACKET); CI runs as root")


@pytest.fixture
def switch() -> Iterator[SwitchProcess]:
    """A fresh switch without ports: P4Runtime behaviour only."""
    with run_switch() as sw:
        yield sw


@pytest.fixture
def topo(needs_root: None) -> Iterator[VethTopology]:
    """Two switch ports (1, 2), each to its own host namespace."""
    with veth_topology([1, 2]) as t:
        yield t


@pytest.fixture
def switch_with_ports(topo: VethTopology) -> Iterator[tuple[SwitchProcess, VethTopology]]:
    with run_switch(*topo.port_args(), control=True) as sw:
        yield sw, topo
