"""CPU budgets for the peers that run without the lab: the lab's roles, the lab's cgroups.

So that every system gets the same CPU per server and per controller, the Redis Cluster and
stop-and-copy peers place their processes in the cgroups NetMigrate's lab uses
(:mod:`netmigrate.lab.cgroups`, one ``nm-lab-<prefix>/<role>`` group per role), with the same
default shares: server ``n`` of the peer runs in role ``redis<n>`` (0.25 core by default), the
process that moves the slots (``redis-cli --cluster reshard``, the stop-and-copy mover) in
``controller`` (0.3). The load generator (the harness process) stays outside every cgroup for
every system, NetMigrate's included, and is measured against one core (the report's ``harness``
role), so no system is bounded by its load generator.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netmigrate.lab import cgroups
from netmigrate.lab.errors import LabError

#: The lab's client host name, so ``--cpu client=...`` means the same for every system.
CLIENT = "client"
#: The role of a peer's slot mover (the lab's name for where ``netmigrate migrate`` runs).
CONTROLLER = cgroups.CONTROLLER


def server_role(index: int) -> str:
    """Role of a peer's ``index``-th server (0-based), as the lab names its Redis hosts."""
    return f"redis{index + 1}"


def parse(spec: str | None, servers: int) -> cgroups.CpuBudgets | None:
    """``--cpu`` for a peer with ``servers`` servers (ValueError for a bad spec)."""
    hosts = [CLIENT, *(server_role(i) for i in range(servers))]
    try:
        return cgroups.parse_cpu(spec, hosts)
    except LabError as exc:
        raise ValueError(str(exc)) from None


class RoleCgroups:
    """The cgroups of one peer run: made by :meth:`up`, removed by :meth:`down`."""

    def __init__(self, prefix: str, budgets: cgroups.CpuBudgets) -> None:
        self.prefix = prefix
        self.budgets = budgets
        self._run_dir: Path | None = None
        self._state: cgroups.LabCpu | None = None

    def up(self) -> None:
        """Make the groups. Empty ones an earlier run of this prefix left (killed before
        :meth:`down`, e.g. by SIGKILL) are removed first, so this run starts from its own
        groups only; groups with a process inside are left alone."""
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"nm-bench-{self.prefix}-"))
        try:
            cgroups.remove_if_empty(cgroups.root_group(self.prefix))
            self._state, _ = cgroups.apply(self.prefix, self.budgets, {}, self._run_dir)
        except (LabError, OSError) as exc:
            self.down()
            raise RuntimeError(
                f"CPU budgets for {self.prefix}: {exc} (they need root and the cgroup cpu "
                "controller; `--cpu off` runs without them)"
            ) from exc
        except BaseException:
            self.down()
            raise

    def argv(self, role: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs in ``role``'s cgroup from its first instruction."""
        state = self._state
        if state is None:
            raise RuntimeError("role cgroups are not up")
        state.group(role)  # an unknown role fails here, not in the child
        return cgroups.join_argv(state, role, argv)

    def wrapper(self, role: str) -> Callable[[list[str]], list[str]]:
        """:meth:`argv` for ``role``, as ``start_redis`` takes it."""
        self.argv(role, [])  # fail now on an unknown role
        return lambda argv: self.argv(role, argv)

    def move(self, role: str, pid: int) -> None:
        """Move the running process ``pid`` into ``role``'s cgroup."""
        if self._state is None:
            raise RuntimeError("role cgroups are not up")
        cgroups.join(self._state, role, pid)

    def members(self, role: str) -> list[int]:
        return [] if self._state is None else cgroups.members(self._state, role)

    def budgets_dict(self) -> dict[str, Any]:
        return self.budgets.to_dict()

    def usage(self) -> Mapping[str, Any] | None:
        return None if self._run_dir is None else cgroups.read_usage(self._run_dir)

    def down(self) -> None:
        """Remove the cgroups (processes still inside go to the root group, unkilled)."""
        run_dir, self._run_dir, self._state = self._run_dir, None, None
        if run_dir is None:
            return
        try:
            cgroups.remove(run_dir)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
