"""The NetMigrate row of ``netmigrate bench``: the full local lab, migrated by the controller.

What the harness benchmarks as ``--system netmigrate`` (see :mod:`netmigrate.bench.system` for
the call order):

* **setup** brings up a lab stack of its own (:func:`netmigrate.lab.stack.stack_up`: namespaces
  ``<prefix>-sw``, ``-client``, ``-redis1``, ``-redis2``, the lab switch forwarding every
  packet, a real ``redis-server`` and a ``netmigrate agent`` per Redis host). Server 1
  (``redis1``) is the keyspace's default owner and owns all 16384 slots, server 2 (``redis2``)
  none. A lab left over by an interrupted run with the same prefix is removed first, so every
  run starts on fresh servers. The harness loads the records through the client.
* **client** is the NetMigrate :class:`~netmigrate.client.aio.AsyncClient`, whose UDP socket is
  created inside the client namespace (a socket stays in the namespace it was created in; the
  service address is only routed there, through the switch). What the client handles inside a
  successful call is reported as client events: retries after ``WRONG_OWNER`` / ``BUSY`` /
  ``MISS`` answers (named by the status), resends after a timeout (``TIMEOUT_RETRY``), reads
  answered through a double read (``DOUBLE_READ``) and requests the switch steered to the
  migration target (``TO_TARGET``), as the client's own ``on_event`` hook reports them.
  Failed calls are errors labelled by status or ``Timeout``.
* **migrate** is :func:`netmigrate.migration.controller.run` with the switch and both agents,
  finalize included: ``observer.finished()`` is called once the moved keys are deleted at the
  source, so "during" covers the whole migration as an operator sees it.
* **slot_owners** asks both agents (GetSlots); **server_counters** are the agents' own
  counters (GetStats: replies per status, double-read misses, dedup hits ...) and the CPU time
  of every lab process; **keys_per_node** is ``DBSIZE`` of each Redis.
* **teardown** takes the whole lab down (processes, namespaces, files); safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from netmigrate.bench.kv import ClientEvents
from netmigrate.bench.system import (
    ClientRecipe,
    MigrationObserver,
    MigrationResult,
    SetupPlan,
    System,
    SystemUnavailable,
)
from netmigrate.client.aio import AsyncClient
from netmigrate.client.errors import ServerError
from netmigrate.protocol.constants import (
    SLOT_COUNT,
    Status,
)

#: Lab of ``netmigrate bench`` (tests pass their own prefix and ports).
DEFAULT_PREFIX = "nmbs"
#: Far from the default lab (9559, 17000+) and the migration benchmark lab (9659, 17100+).
DEFAULT_GRPC_PORT = 19759
DEFAULT_CONTROL_BASE = 19760
SOURCE_ID, TARGET_ID = 1, 2
SERVER_HOSTS = ("redis1", "redis2")
#: The lab host whose namespace and CPU budget the load generators use.
CLIENT_HOST = "client"
#: The controller's P4Runtime election id (the stack configures the switch with its own).
CONTROLLER_ELECTION_ID = 20

#: Migration defaults of the bench (the lab benchmark's choice, docs/benchmarks.md): many small
#: slots in flight at once, large copy batches, no rate limit.
DEFAULT_PARALLEL = 64
DEFAULT_BATCH = 512
DEFAULT_RATE = 0
DEFAULT_GRACE = 1.0

#: Client settings of the lab load generator (``netmigrate bench load``): per-attempt timeout and
#: retries; a migrating slot answers WRONG_OWNER / BUSY for a moment, which retries absorb.
CLIENT_TIMEOUT = 0.25
CLIENT_RETRIES = 8
#: Requests in flight per ``set_many`` / ``get_many`` call (one per slot involved). Bounded so
#: that the load phase's concurrent batches do not flood the lab switch's queues; measured here
#: (40,000 keys, 8 loaders): 64 -> 15k keys/s, 256 -> 21k keys/s, unbounded 22k keys/s.
BULK_CHUNK = 256

_SOCKET_BUFFER = 4 << 20


# --- client -----------------------------------------------------------------------------------


def _status_error_classes() -> dict[int, type[ServerError]]:
    # The harness labels a failed operation by its exception class name: one subclass of
    # ServerError per status makes the report say "WRONG_OWNER 3" instead of "ServerError 3".
    return {int(s): type(s.name, (ServerError,), {"__module__": __name__}) for s in Status}


_STATUS_ERRORS = _status_error_classes()


def _client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
        sock.setblocking(False)
        sock.bind(("0.0.0.0", 0))
    except OSError:
        sock.close()
        raise
    return sock


class LabClient(AsyncClient):
    """:class:`AsyncClient` whose socket lives in a network namespace (when given), reporting
    the events it handles inside successful calls to ``events`` (the client's own event hook:
    retries by status, timeout resends, steered replies)."""

    def __init__(
        self,
        address: tuple[str, int],
        keyspace: int,
        *,
        netns: str | None,
        events: ClientEvents,
        **options: Any,
    ) -> None:
        factory = None
        if netns is not None:

            async def factory() -> socket.socket:
                from netmigrate.netns import call_in_netns

                # The service address is numeric (the lab's), so no name lookup is needed.
                return await asyncio.to_thread(call_in_netns, netns, _client_socket)

        super().__init__(
            address, keyspace, socket_factory=factory, on_event=events.event, **options
        )
        self.netns = netns
        self.events = events


class NetMigrateKV:
    """:class:`~netmigrate.bench.kv.KVClient` over a :class:`LabClient`."""

    def __init__(self, client: LabClient) -> None:
        self._client = client

    @property
    def client(self) -> LabClient:
        return self._client

    async def get(self, key: bytes) -> bytes | None:
        try:
            return await self._client.get(key)
        except ServerError as exc:
            raise _STATUS_ERRORS[int(exc.status)](exc.status, exc.message) from None

    async def set(self, key: bytes, value: bytes) -> None:
        try:
            await self._client.set(key, value)
        except ServerError as exc:
            raise _STATUS_ERRORS[int(exc.status)](exc.status, exc.message) from None

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        for chunk in _slot_chunks(items, key=lambda kv: kv[0]):
            await self._client.mset(chunk)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for chunk in _slot_chunks(keys, key=lambda k: k):
            out += await self._client.mget(chunk)
        return out

    async def aclose(self) -> None:
        self._client.close()


def _slot_chunks(items: Sequence[Any], *, key: Any) -> list[list[Any]]:
    """``items`` in order, cut into chunks of at most :data:`BULK_CHUNK` distinct slots."""
    from netmigrate.protocol.slot import key_slot

    chunks: list[list[Any]] = []
    slots: set[int] = set()
    current: list[Any] = []
    for item in items:
        slot = key_slot(key(item))
        if slot not in slots and len(slots) == BULK_CHUNK:
            chunks.append(current)
            current, slots = [], set()
        slots.add(slot)
        current.append(item)
    if current:
        chunks.append(current)
    return chunks


async def open_client(
    events: ClientEvents, *, service: tuple[str, int], keyspace: int, netns: str | None
) -> NetMigrateKV:
    """A client of a running lab from its address alone (:meth:`NetMigrateSystem.client_recipe`:
    a load-generator process builds its own)."""
    client = LabClient(
        service, keyspace, netns=netns, events=events, timeout=CLIENT_TIMEOUT,
        retries=CLIENT_RETRIES,
    )  # fmt: skip
    await client.open()
    return NetMigrateKV(client)


# --- system -----------------------------------------------------------------------------------


async def _agent_call(control: str, method: str) -> Any:
    """``GetSlots`` or ``GetStats`` of the agent whose control service is at ``control``."""
    from netmigrate.agent.channel import (
        DEFAULT_TIMEOUT,
        AgentControlStub,
        control_pb2,
        open_channel,
    )

    request = getattr(control_pb2, f"{method}Request")()
    async with open_channel(control) as channel:
        return await getattr(AgentControlStub(channel), method)(request, timeout=DEFAULT_TIMEOUT)


def _option(options: Mapping[str, Any], name: str, default: Any) -> Any:
    value = options.get(name)
    return default if value is None else value


def migration_options(options: Mapping[str, Any]) -> Any:
    """The controller's MigrationOptions from the bench's ``netmigrate_*`` knobs (None: the
    default); raises ValueError for a value the controller would refuse."""
    from netmigrate.migration.model import MigrationOptions

    return MigrationOptions(
        parallel=int(_option(options, "netmigrate_parallel", DEFAULT_PARALLEL)),
        batch=int(_option(options, "netmigrate_batch", DEFAULT_BATCH)),
        rate=int(_option(options, "netmigrate_rate", DEFAULT_RATE)),
        grace=float(_option(options, "netmigrate_grace", DEFAULT_GRACE)),
    )


def _cpu_ms(pid: int) -> int:
    """User + system CPU of ``pid`` in ms (0 if it is gone)."""
    from netmigrate.bench.micro.agent import process_cpu

    try:
        return round(1000 * process_cpu(pid))
    except (OSError, IndexError):
        return 0


class NetMigrateSystem(System):
    name = "netmigrate"
    description = (
        "NetMigrate: lab switch steers requests by slot, agents copy slots live "
        "(double reads, redirected writes), controller run + finalize"
    )

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        grpc_port: int = DEFAULT_GRPC_PORT,
        control_base: int = DEFAULT_CONTROL_BASE,
        run_dir: Path | None = None,
    ) -> None:
        missing = [t for t in ("ip", "ethtool", "redis-server") if shutil.which(t) is None]
        if missing:
            raise SystemUnavailable(
                f"system 'netmigrate' needs {', '.join(missing)} (Debian packages iproute2, "
                "ethtool, redis-server)"
            )
        if os.geteuid() != 0:
            raise SystemUnavailable(
                "system 'netmigrate' runs the local lab (network namespaces): run as root"
            )
        from netmigrate.lab.stack import StackConfig

        self._config = StackConfig(
            prefix=prefix,
            redis_hosts=SERVER_HOSTS,
            run_dir=run_dir,
            grpc_port=grpc_port,
            control_base=control_base,
        )
        self._stack: Any = None
        self._options: Any = None
        self._clients: list[LabClient] = []

    # -- names -----------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return SERVER_HOSTS[SOURCE_ID - 1]

    @property
    def target(self) -> str:
        return SERVER_HOSTS[TARGET_ID - 1]

    @property
    def stack(self) -> Any:
        """The running lab's :class:`~netmigrate.lab.stack.Stack` (None when down)."""
        return self._stack

    def info(self) -> dict[str, Any]:
        from netmigrate.bench.redis_server import redis_version

        opts = self._options
        return {
            "servers": len(SERVER_HOSTS),
            "redis_version": redis_version(),
            "client": "netmigrate.client.aio.AsyncClient (UDP) in the client namespace, "
            f"timeout {CLIENT_TIMEOUT} s x {1 + CLIENT_RETRIES} attempts",
            "lab": {
                "prefix": self._config.prefix,
                "p4runtime": f"127.0.0.1:{self._config.grpc_port}",
                "switch": "netmigrate lab switch (AF_PACKET, every packet through the pipeline)",
            },
            "migration": None
            if opts is None
            else {"parallel": opts.parallel, "batch": opts.batch, "rate": opts.rate,
                  "grace": opts.grace},
        }  # fmt: skip

    def validate_options(self, options: Mapping[str, Any]) -> None:
        migration_options(options)
        self._budgets(options)

    def _budgets(self, options: Mapping[str, Any]) -> Any:
        """The lab's per-host CPU budgets from the ``cpu`` knob (``default``, ``off`` or
        ``HOST=FRACTION,...``, as ``lab up --cpu``); on by default (docs/benchmarks.md)."""
        from netmigrate.lab.cgroups import parse_cpu
        from netmigrate.lab.errors import LabError

        hosts = self._config.topology().host_names
        try:
            return parse_cpu(options.get("cpu"), hosts)
        except LabError as exc:
            raise ValueError(str(exc)) from None

    def cpu_budgets(self) -> dict[str, Any] | None:
        budgets = self._config.cpu
        return budgets.to_dict() if hasattr(budgets, "to_dict") else None

    def cpu_usage(self) -> dict[str, Any] | None:
        if self._stack is None or self.cpu_budgets() is None:
            return None
        from netmigrate.lab.cgroups import read_usage

        return read_usage(self._stack.run_dir)

    def client_recipe(self) -> ClientRecipe | None:
        stack = self._require()
        return ClientRecipe(
            f"{__name__}:open_client",
            {"service": tuple(stack.service), "keyspace": stack.keyspace_id,
             "netns": stack.client_netns},
        )  # fmt: skip

    def join_client_role(self, pid: int) -> str | None:
        from netmigrate.lab import cgroups

        stack = self._require()
        state = cgroups.load(stack.run_dir)
        if state is None:
            return None
        cgroups.join(state, CLIENT_HOST, pid)
        return CLIENT_HOST

    # -- lifecycle -------------------------------------------------------------------------

    async def setup(self, plan: SetupPlan) -> None:
        from netmigrate.lab.stack import stack_down, stack_up

        self._options = migration_options(plan.options)
        # None (``off``) rather than "keep": a budget left by another run must not apply.
        self._config = dataclasses.replace(self._config, cpu=self._budgets(plan.options))
        # A lab of an interrupted run holds stale keys and slot ownership: start fresh.
        await asyncio.to_thread(stack_down, self._config)
        up = asyncio.ensure_future(asyncio.to_thread(stack_up, self._config))
        try:
            self._stack = await asyncio.shield(up)
        except BaseException:
            # Cancelling the await (SIGTERM) does not stop the thread: let it finish first, or
            # processes it starts after the teardown would outlive it.
            with contextlib.suppress(BaseException):
                await up
            await self.teardown()
            raise

    async def client(self, events: ClientEvents) -> NetMigrateKV:
        stack = self._require()
        client = LabClient(
            stack.service,
            stack.keyspace_id,
            netns=stack.client_netns,
            events=events,
            timeout=CLIENT_TIMEOUT,
            retries=CLIENT_RETRIES,
        )
        await client.open()
        self._clients.append(client)
        return NetMigrateKV(client)

    async def teardown(self) -> None:
        from netmigrate.lab.stack import stack_down

        clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self._stack = None
        # Always: also after a setup that failed half-way (stack_down removes what exists).
        await asyncio.to_thread(stack_down, self._config)

    def _require(self) -> Any:
        if self._stack is None:
            raise RuntimeError("netmigrate system is not set up")
        return self._stack

    # -- endpoints -------------------------------------------------------------------------

    def _endpoints(self) -> tuple[Any, Any, Any, Any]:
        from netmigrate.migration.model import (
            AgentEndpoint,
            KeyspaceRef,
            SwitchEndpoint,
        )

        stack = self._require()
        source = AgentEndpoint(SOURCE_ID, stack.server(SOURCE_ID).control)
        target = AgentEndpoint(TARGET_ID, stack.server(TARGET_ID).control)
        keyspace = KeyspaceRef(stack.keyspace_id, stack.service_ip, stack.service_port)
        switch = SwitchEndpoint(
            stack.p4runtime, device_id=stack.device_id, election_id=CONTROLLER_ELECTION_ID
        )
        return source, target, keyspace, switch

    def _controls(self) -> list[tuple[str, str]]:
        """(server name, control address in the root namespace) of both agents."""
        stack = self._require()
        return [(name, stack.server(name).control) for name in SERVER_HOSTS]

    # -- migration -------------------------------------------------------------------------

    async def migrate(self, slots: Sequence[int], observer: MigrationObserver) -> MigrationResult:
        from netmigrate.migration import controller
        from netmigrate.migration.model import MigrationError, Progress

        source, target, keyspace, switch = self._endpoints()
        opts = self._options

        def on_progress(p: Progress) -> None:
            observer.progress(p.keys_copied, p.keys_copied + p.keys_remaining, "keys")

        # Clients may be affected from the first controller call on (the source counts the
        # keys of every slot before it starts): "during" begins here.
        observer.started()
        t0, wall0 = time.monotonic(), time.time()
        result = await controller.run(
            source, target, slots, keyspace=keyspace, switch=switch, options=opts,
            progress=on_progress,
        )  # fmt: skip
        t_end, wall_end = time.monotonic(), time.time()
        if result.state != "FINALIZED" or result.finalize is None:
            raise MigrationError(
                f"migration {result.migration_id} ended {result.state}: {result.message}"
            )
        observer.progress(result.keys_copied, result.keys_copied, "keys")
        observer.finished()
        fin = result.finalize
        moved = [s for s in result.slots if s.outcome in ("done", "finalized")]
        durations = sorted(s.duration for s in moved)
        return MigrationResult(
            slots_moved=len(moved),
            keys_moved=result.keys_copied,
            details={
                "migration_id": result.migration_id,
                "state": result.state,
                "options": {"parallel": opts.parallel, "batch": opts.batch,
                            "rate_keys_per_s": opts.rate, "grace_s": opts.grace},
                "controller_s": round(t_end - t0, 4),
                # The agents' part (their wall clock), and the controller's before it (checks,
                # the source counting keys) and after it (switch check, grace, deletion).
                "agent_s": round(result.duration, 4),
                "prepare_s": round(max(0.0, result.started - wall0), 4),
                "finalize_s": round(max(0.0, wall_end - result.finished), 4),
                "slots_skipped": result.slots_skipped,
                "slots_failed": result.slots_failed,
                "slots_retried": sum(1 for s in moved if s.attempts > 1),
                "slot_s_p50": round(durations[len(durations) // 2], 4) if durations else None,
                "slot_s_max": round(durations[-1], 4) if durations else None,
                "finalize": {
                    "keys_deleted": fin.keys_deleted,
                    "slots_finalized": fin.slots_finalized,
                    "switch_verified": fin.switch_verified,
                },
            },
        )  # fmt: skip

    # -- state -----------------------------------------------------------------------------

    async def slot_owners(self) -> dict[int, str]:
        """Every slot -> the server whose agent owns it; ``"none"`` if no agent claims it and
        both names joined by ``+`` if both do (neither is ever the target's name)."""
        owned: dict[int, list[str]] = {s: [] for s in range(SLOT_COUNT)}
        for name, control in self._controls():
            reply = await _agent_call(control, "GetSlots")
            for r in reply.owned:
                for s in range(r.start, r.end + 1):
                    owned[s].append(name)
        return {s: "+".join(names) if names else "none" for s, names in owned.items()}

    async def keys_per_node(self) -> dict[str, int]:
        """Client keys per server: ``DBSIZE`` without the agent's own records (identity, slot
        ownership, write-dedup records), which all live in one slot (D8)."""
        from redis.asyncio import Redis

        from netmigrate.agent.reserved import RESERVED_SLOT, is_reserved

        stack = self._require()
        out: dict[str, int] = {}
        for s in stack.servers:
            r = Redis(unix_socket_path=s.redis_socket)
            try:
                total = int(await r.dbsize())
                n = int(await r.execute_command("CLUSTER", "COUNTKEYSINSLOT", RESERVED_SLOT))
                keys = await r.execute_command("CLUSTER", "GETKEYSINSLOT", RESERVED_SLOT, n or 1)
            finally:
                await r.aclose()
            out[s.name] = total - sum(1 for k in keys if is_reserved(k))
        return out

    async def server_counters(self) -> dict[str, int]:
        """Per agent (``redis1_...``): replies per status, requests per op and every agent
        counter (GetStats); per lab process: CPU ms (``cpu_ms_<process>``)."""
        from netmigrate.lab.supervise import Supervisor

        stack = self._require()
        out: dict[str, int] = {}
        for name, control in self._controls():
            stats = await _agent_call(control, "GetStats")
            for group in ("requests", "replies"):
                for k, v in getattr(stats, group).items():
                    out[f"{name}_{group}_{k}"] = int(v)
            for k, v in stats.counters.items():
                out[f"{name}_{k}"] = int(v)
        sup = Supervisor(stack.run_dir)
        for proc in sup.names():
            status = sup.status(proc)
            if status.pid is not None:
                out[f"cpu_ms_{proc}"] = _cpu_ms(status.pid)
        return out


__all__ = ["LabClient", "NetMigrateKV", "NetMigrateSystem"]
