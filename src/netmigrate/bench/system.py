"""The ``System`` interface the harness drives, and the registry of systems by name.

A system is everything between the load generator and the data: servers, routing, and the way
it moves slots. The harness calls, in order::

    await system.setup(plan)                 # start servers; the target owns none of plan.slots
    client = await system.client(events)     # as many times as it likes
    ...load phase, run phase...
    result = await system.migrate(plan.slots, observer)   # under load, as a task
    owners = await system.slot_owners()      # afterwards: where each slot lives now
    await system.teardown()                  # always, even after a failure

``migrate`` must call ``observer.started()`` when the migration really begins (the harness
switches its latency histograms from "before" to "during" there), ``observer.progress`` as work
completes, and ``observer.finished()`` when clients no longer depend on the old placement
("after" begins). If it forgets, the harness uses the call and return of ``migrate``.

Adding a system: implement :class:`System` and register a factory under a name with
:func:`register_system`, or add a lazy ``"module:attribute"`` entry to :data:`_LAZY_SYSTEMS`.
The NetMigrate system itself is such a lazy entry
(:class:`netmigrate.bench.peers.netmigrate.NetMigrateSystem`: the full local lab, migrated by the
controller). A factory raises :class:`SystemUnavailable` when the system cannot run here (a
missing binary, no root for the lab's namespaces): ``bench all`` then skips it with a note.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from netmigrate.bench.kv import ClientEvents, KVClient


class SystemUnavailable(RuntimeError):
    """The system cannot run here (a component or a binary is missing)."""


@dataclass(frozen=True)
class SetupPlan:
    """What a system must prepare before the load phase."""

    records: int
    value_size: int
    #: Slots the run will migrate from the source to the target; the target must not own them.
    slots: tuple[int, ...]
    #: System-specific knobs (e.g. ``masters`` for Redis Cluster), from the command line.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MigrationResult:
    """What a system reports about a finished migration."""

    slots_moved: int
    keys_moved: int
    #: System-specific facts for the report (commands run, pause length, server-side stats).
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientRecipe:
    """How a load-generator process makes a client of a running system: ``factory`` names
    (``"module:function"``) an async function ``(events, **kwargs) -> KVClient``; ``kwargs``
    must pickle (they cross into a spawned process)."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class MigrationObserver(Protocol):
    def started(self) -> None: ...

    def progress(self, done: int, total: int, unit: str) -> None: ...

    def finished(self) -> None: ...


class System(abc.ABC):
    """One benchmarked system (see the module docstring for the call order)."""

    #: Registry name, e.g. ``"redis-cluster"``.
    name: str = ""
    #: One line for ``--help`` and the report.
    description: str = ""

    @abc.abstractmethod
    async def setup(self, plan: SetupPlan) -> None:
        """Start servers and routing so that the source owns every slot of ``plan.slots``."""

    @abc.abstractmethod
    async def client(self, events: ClientEvents) -> KVClient:
        """A new client; it reports internally handled redirections to ``events``."""

    @abc.abstractmethod
    async def migrate(self, slots: Sequence[int], observer: MigrationObserver) -> MigrationResult:
        """Move ``slots`` from the source to the target while clients keep running."""

    @abc.abstractmethod
    async def slot_owners(self) -> dict[int, str]:
        """Slot -> name of the server that serves it now (all 16384 slots)."""

    @property
    @abc.abstractmethod
    def source(self) -> str:
        """Name of the server the slots move from (as in :meth:`slot_owners`)."""

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """Name of the server the slots move to."""

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Stop everything ``setup`` started and remove its files; safe to call twice."""

    def info(self) -> dict[str, Any]:
        """Static facts for the report (versions, server count, client library)."""
        return {}

    def validate_slots(self, slots: Sequence[int]) -> None:
        """Raise ``ValueError`` if this system cannot migrate exactly ``slots``."""
        return None

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for an unusable knob of ``options`` (:attr:`SetupPlan.options`),
        so the command line refuses it before anything starts."""
        return None

    async def server_counters(self) -> dict[str, int]:
        """Monotonic server-side counters; the harness reports their change over the run."""
        return {}

    async def keys_per_node(self) -> dict[str, int]:
        """Number of keys each server holds now (for the report and tests)."""
        return {}

    def cpu_budgets(self) -> dict[str, Any] | None:
        """The per-role CPU budgets the system runs with (``{"period_us", "shares"}``), None
        without; recorded in the report."""
        return None

    def client_recipe(self) -> ClientRecipe | None:
        """How another process makes a client (the run phase's load-generator processes);
        None: clients only live in the harness process, so its load runs there."""
        return None

    def join_client_role(self, pid: int) -> str | None:
        """Move process ``pid`` (a load generator) into the budget of the ``client`` role;
        the role's name, None when the system runs without budgets."""
        return None

    def cpu_usage(self) -> dict[str, Any] | None:
        """Per-role CPU use so far (:func:`netmigrate.lab.cgroups.read_usage`'s format), None
        without budgets. Called at the run phase's boundaries, so it must be quick."""
        return None


SystemFactory = Callable[[], System]

_FACTORIES: dict[str, SystemFactory] = {}

#: name -> "module:attribute" imported on first use, so ``--help`` stays cheap and a missing
#: component only fails the run that asks for it.
_LAZY_SYSTEMS: dict[str, str] = {
    "redis-cluster": "netmigrate.bench.peers.redis_cluster:RedisClusterSystem",
    "redis-cluster-tuned": "netmigrate.bench.peers.redis_cluster:TunedRedisClusterSystem",
    "stop-and-copy": "netmigrate.bench.peers.stop_and_copy:StopAndCopySystem",
    "netmigrate": "netmigrate.bench.peers.netmigrate:NetMigrateSystem",
}


def register_system(name: str, factory: SystemFactory) -> None:
    """Make ``factory`` available as ``--system name`` (replaces a lazy entry)."""
    _FACTORIES[name] = factory
    _LAZY_SYSTEMS.pop(name, None)


def system_names() -> list[str]:
    return sorted(set(_FACTORIES) | set(_LAZY_SYSTEMS))


def create_system(name: str) -> System:
    """A fresh instance of the system called ``name``.

    Raises ``ValueError`` for an unknown name and :class:`SystemUnavailable` for a known
    system whose implementation cannot be imported here.
    """
    if name in _FACTORIES:
        return _FACTORIES[name]()
    spec = _LAZY_SYSTEMS.get(name)
    if spec is None:
        raise ValueError(f"unknown system {name!r}; choose from {', '.join(system_names())}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing provider module means "unavailable"; a missing dependency *inside*
        # an existing module is a real bug and must surface as such.
        if exc.name is not None and module_name.startswith(exc.name):
            raise SystemUnavailable(
                f"system {name!r} is not available: module {module_name} is not installed"
            ) from None
        raise
    factory = getattr(module, attr, None)
    if factory is None:
        raise SystemUnavailable(f"system {name!r}: {module_name} has no attribute {attr!r}")
    return factory()
