"""Fixtures of the unit tests of the P4Runtime modules (p4_*, slot_map): run a module in-process
through its real entry point, a real lab switch, and a fake session for the error paths that a
real switch cannot be made to take on demand."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

from netmigrate import p4rt
from netmigrate.lab.switch_process import run_switch

RunModule = Callable[[ModuleType, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def run_p4_module(capsys: pytest.CaptureFixture[str]) -> RunModule:
    """``run(module, args)``: the module's result, as Ansible would get it (``_ansible_*``
    keys in ``args`` set check and diff mode)."""

    def run(module: ModuleType, args: dict[str, Any]) -> dict[str, Any]:
        with patch_module_args(args), pytest.raises(SystemExit) as exited:
            module.main()
        out = capsys.readouterr().out
        result = json.loads(out)
        assert (exited.value.code != 0) == bool(result.get("failed")), out
        return result

    return run


@pytest.fixture
def lab_switch() -> Iterator[str]:
    """The P4Runtime address of a fresh lab switch (no pipeline yet)."""
    with run_switch() as sw:
        yield sw.address


class FakeSession:
    """Stands in for P4RTSession: opens without a switch, records what happened."""

    instances: list[FakeSession] = []

    def __init__(self, address: str, **kwargs: Any) -> None:
        self.address = address
        self.kwargs = kwargs
        self.opened = self.closed = False
        FakeSession.instances.append(self)

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_session(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    FakeSession.instances = []
    monkeypatch.setattr(p4rt, "P4RTSession", FakeSession)
    return FakeSession


@pytest.fixture
def raising() -> Callable[[BaseException], Callable[..., Any]]:
    """``raising(exc)``: an async library function that raises ``exc``."""

    def make(exc: BaseException) -> Callable[..., Any]:
        async def fn(*args: Any, **kwargs: Any) -> Any:
            raise exc

        return fn

    return make
