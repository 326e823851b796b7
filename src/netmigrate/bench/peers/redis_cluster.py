"""Peer: Redis Cluster's own live resharding, driven by ``redis-cli --cluster reshard``.

Setup starts ``masters`` cluster-enabled redis-server processes (no replicas) and builds the
cluster by hand (``CLUSTER SET-CONFIG-EPOCH``, ``ADDSLOTSRANGE``, ``MEET``), because
``redis-cli --cluster create`` insists on three masters and we want NetMigrate's layout: the
source owns the slots to migrate, the target starts empty. With ``masters == 2`` the source
owns all 16384 slots; with more, the source owns the slots to move (at least its even share)
and the middle nodes share the rest.

The migration is exactly what an operator types::

    redis-cli --cluster reshard SOURCE --cluster-from SRC_ID --cluster-to DST_ID \\
        --cluster-slots N --cluster-yes --cluster-pipeline P

``redis-cli`` moves the source's *lowest-numbered* slots, so the slot set must be ``0..N-1``
(:meth:`RedisClusterSystem.validate_slots`). Its output has one line per moved slot, ending
with one dot per key; the harness reads it live for progress and counts the dots as keys moved.

Clients are redis-py's ``redis.asyncio.cluster.RedisCluster`` with default settings
(``redis-cluster``) or with ``reinitialize_steps=0`` (``redis-cluster-tuned``): by default
every 5th MOVED makes redis-py close all node connections and rebuild its topology, which
stalls and even fails commands of other tasks in flight. redis-py
follows MOVED, ASK and TRYAGAIN inside ``_execute_command`` and reports each one to its
observability hook ``_record_error_metric``; :class:`CountingRedisCluster` overrides that hook
to count them per kind before delegating, so nothing about redirect handling changes. As an
independent check the system also reports the servers' own ``INFO errorstats`` (every MOVED,
ASK and TRYAGAIN reply any node sent), which the harness diffs over the run phase.

``redis-cluster-tuned`` does not use redis-py at all by default: its clients are
:mod:`netmigrate.bench.peers.cluster_client`'s lean cluster client (asyncio + hiredis, one
pipelined connection per node, MOVED/ASK/TRYAGAIN handled as a cluster client must), which
costs ~6 µs of CPU per operation against redis-py's ~50 (measured with ``netmigrate bench
cluster-client``). redis-py made the tuned peer's load generator, not its servers, the
bottleneck under the per-role budgets (docs/benchmarks.md, "A load generator that does not
bound Redis Cluster").
``cluster_client="redis-py"`` (``--cluster-client redis-py``) gives the tuned peer redis-py
with ``reinitialize_steps=0`` again; ``redis-cluster`` keeps redis-py's defaults as the
"as users run it" reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, TryAgainError

from netmigrate.bench import roles
from netmigrate.bench.kv import ASK, MOVED, TRYAGAIN, ClientEvents
from netmigrate.bench.peers import cluster_client
from netmigrate.bench.redis_server import (
    HOST,
    RedisServer,
    redis_cli_binary,
    redis_version,
    start_redis,
)
from netmigrate.bench.system import (
    ClientRecipe,
    MigrationObserver,
    MigrationResult,
    SetupPlan,
    System,
)
from netmigrate.protocol.constants import SLOT_COUNT

_REDIRECTS: dict[type[BaseException], str] = {
    MovedError: MOVED,
    AskError: ASK,
    TryAgainError: TRYAGAIN,
}
#: One finished slot in redis-cli's output: "Moving slot 17 from H:P to H:P: ...".
_MOVED_SLOT = re.compile(rb"^Moving slot (\d+) from \S+ to \S+: (\.*)\s*$")


class CountingRedisCluster(RedisCluster):
    """redis-py's cluster client, counting the redirections it follows internally."""

    __slots__ = ("_nm_events",)

    def __init__(self, *args: Any, events: ClientEvents, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nm_events = events

    async def _record_error_metric(self, error: Exception, connection: Any, *args: Any, **kw: Any):
        kind = _REDIRECTS.get(type(error))
        if kind is not None:
            self._nm_events.event(kind)
        return await super()._record_error_metric(error, connection, *args, **kw)


async def open_client(events: ClientEvents, *, port: int, reinit: int) -> ClusterClient:
    """A cluster client seeded with the node at ``port`` (also for load-generator processes)."""
    rc = CountingRedisCluster(host=HOST, port=port, events=events, reinitialize_steps=reinit)
    await rc.initialize()
    return ClusterClient(rc)


class ClusterClient:
    """:class:`~netmigrate.bench.kv.KVClient` over a :class:`CountingRedisCluster`."""

    def __init__(self, rc: CountingRedisCluster) -> None:
        self._rc = rc
        self.get = rc.get  # bound methods: one attribute lookup less on the hot path

    async def set(self, key: bytes, value: bytes) -> None:
        await self._rc.set(key, value)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        await self._rc.mset_nonatomic(dict(items))

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return list(await self._rc.mget_nonatomic(list(keys)))

    async def aclose(self) -> None:
        await self._rc.aclose()


def initial_layout(masters: int, moving: int) -> list[tuple[int, int] | None]:
    """Slot range ``(first, last)`` per node (None: no slots); node 0 is the source.

    The source owns at least the ``moving`` lowest slots; the last node (the target) owns
    nothing; the nodes in between share what is left evenly.
    """
    if masters < 2:
        raise ValueError(f"a resharding benchmark needs at least 2 masters, got {masters}")
    if not 0 < moving <= SLOT_COUNT:
        raise ValueError(f"slots to move must be in 1..{SLOT_COUNT}, got {moving}")
    middle = masters - 2
    if middle == 0:
        return [(0, SLOT_COUNT - 1), None]
    source_end = max(moving, -(-SLOT_COUNT // (masters - 1)))
    if source_end >= SLOT_COUNT:
        return [(0, SLOT_COUNT - 1)] + [None] * (masters - 1)
    layout: list[tuple[int, int] | None] = [(0, source_end - 1)]
    rest = SLOT_COUNT - source_end
    start = source_end
    for i in range(middle):
        size = rest // middle + (1 if i < rest % middle else 0)
        layout.append((start, start + size - 1) if size else None)
        start += size
    layout.append(None)
    return layout


#: Load clients of the peer (``cluster_client`` option).
REDIS_PY = "redis-py"
LEAN = "lean"
CLIENTS = (REDIS_PY, LEAN)

#: Name of the peer's cgroups (``nm-lab-<prefix>/<role>``), apart from every lab's.
CGROUP_PREFIX = "nmbrc"


class RedisClusterSystem(System):
    name = "redis-cluster"
    description = "Redis Cluster live resharding (redis-cli --cluster reshard, redis-py client)"
    #: redis-py's own default: every 5th MOVED rebuilds the whole topology.
    default_reinitialize_steps = 5
    #: The load client unless the ``cluster_client`` option says otherwise.
    default_client = REDIS_PY

    def __init__(self) -> None:
        self._nodes: list[RedisServer] = []
        self._ids: list[str] = []
        self._masters = 2
        self._pipeline = 10
        self._reinit_steps = self.default_reinitialize_steps
        self._client_kind = self.default_client
        self._reshard_proc: asyncio.subprocess.Process | None = None
        self._cgroups: roles.RoleCgroups | None = None

    # -- naming ---------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return "source"

    @property
    def target(self) -> str:
        return "target"

    def _node_name(self, i: int) -> str:
        if i == 0:
            return "source"
        if i == len(self._nodes) - 1:
            return "target"
        return f"node{i}"

    @property
    def nodes(self) -> list[RedisServer]:
        return list(self._nodes)

    def info(self) -> dict[str, Any]:
        return {
            "servers": self._masters,
            "replicas": 0,
            "redis_version": redis_version(),
            "client": (
                f"redis-py {redis.__version__} redis.asyncio.cluster.RedisCluster"
                if self._client_kind == REDIS_PY
                else "netmigrate.bench lean cluster client (asyncio + hiredis, pipelined)"
            ),
            "reshard_pipeline": self._pipeline,
            "client_reinitialize_steps": (
                self._reinit_steps if self._client_kind == REDIS_PY else None
            ),
        }

    def validate_slots(self, slots: Sequence[int]) -> None:
        if not slots or list(slots) != list(range(len(slots))):
            raise ValueError(
                "redis-cli --cluster reshard moves the source's lowest-numbered slots: the slot "
                f"set must be 0..N-1 (got {len(slots)} slots starting at {min(slots, default=0)})"
            )

    # -- lifecycle --------------------------------------------------------------------------
    async def setup(self, plan: SetupPlan) -> None:
        self.validate_slots(plan.slots)
        self._masters = int(plan.options.get("masters", 2))
        self._pipeline = int(plan.options.get("reshard_pipeline", 10))
        if self._pipeline < 1:
            raise ValueError(f"reshard pipeline must be >= 1, got {self._pipeline}")
        steps = plan.options.get("cluster_reinitialize_steps")
        self._reinit_steps = self.default_reinitialize_steps if steps is None else int(steps)
        if self._reinit_steps < 0:
            raise ValueError(f"reinitialize steps must be >= 0, got {self._reinit_steps}")
        self._client_kind = self._client_option(plan.options)
        layout = initial_layout(self._masters, len(plan.slots))
        redis_cli_binary()  # fail before starting anything if redis-cli is missing
        budgets = roles.parse(plan.options.get("cpu"), self._masters)
        try:
            if budgets is not None:
                self._cgroups = roles.RoleCgroups(CGROUP_PREFIX, budgets)
                self._cgroups.up()
            for i in range(self._masters):
                self._nodes.append(
                    await start_redis(cluster=True, name=f"node{i}", wrap=self._join(i))
                )
            await self._form_cluster(layout)
        except BaseException:
            await self.teardown()
            raise

    async def _form_cluster(self, layout: list[tuple[int, int] | None]) -> None:
        clients = [n.client(decode_responses=True) for n in self._nodes]
        try:
            for i, (c, rng) in enumerate(zip(clients, layout, strict=True)):
                # Distinct epochs up front, as redis-cli --cluster create does: no collisions
                # to resolve later, so every node agrees on the slot map at once.
                await c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                if rng is not None:
                    await c.execute_command("CLUSTER", "ADDSLOTSRANGE", rng[0], rng[1])
                self._ids.append(await c.execute_command("CLUSTER", "MYID"))
            first = self._nodes[0]
            for c in clients[1:]:
                await c.execute_command("CLUSTER", "MEET", HOST, first.port, first.bus_port)
            await self._wait_converged(clients, timeout=30.0)
        finally:
            for c in clients:
                await c.aclose()

    async def _wait_converged(self, clients: list[Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = len(self._nodes)
        while True:
            ok = True
            for c in clients:
                if not await _node_converged(c, want):
                    ok = False
                    break
            if ok and await self._cli_check_ok():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster of {want} nodes did not converge in {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def _cli_check_ok(self) -> bool:
        proc = await asyncio.create_subprocess_exec(
            redis_cli_binary(), "--cluster", "check", self._nodes[0].address,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode == 0 and b"All nodes agree" in out

    def _client_option(self, options: Mapping[str, Any]) -> str:
        kind = options.get("cluster_client") or self.default_client
        if kind not in CLIENTS:
            raise ValueError(f"cluster client must be one of {', '.join(CLIENTS)}, got {kind!r}")
        return str(kind)

    async def client(self, events: ClientEvents) -> Any:
        port = self._nodes[0].port
        if self._client_kind == LEAN:
            return await cluster_client.open_lean_client(events, port=port, host=HOST)
        return await open_client(events, port=port, reinit=self._reinit_steps)

    def client_recipe(self) -> ClientRecipe | None:
        port = self._nodes[0].port
        if self._client_kind == LEAN:
            return ClientRecipe(
                f"{cluster_client.__name__}:open_lean_client", {"port": port, "host": HOST}
            )
        return ClientRecipe(f"{__name__}:open_client", {"port": port, "reinit": self._reinit_steps})

    def join_client_role(self, pid: int) -> str | None:
        if self._cgroups is None:
            return None
        self._cgroups.move(roles.CLIENT, pid)
        return roles.CLIENT

    async def migrate(self, slots: Sequence[int], observer: MigrationObserver) -> MigrationResult:
        self.validate_slots(slots)
        total = len(slots)
        cmd = [
            redis_cli_binary(), "--cluster", "reshard", self._nodes[0].address,
            "--cluster-from", self._ids[0], "--cluster-to", self._ids[-1],
            "--cluster-slots", str(total), "--cluster-yes",
            "--cluster-pipeline", str(self._pipeline),
        ]  # fmt: skip
        started = time.monotonic()
        cg = self._cgroups
        proc = await asyncio.create_subprocess_exec(
            *(cmd if cg is None else cg.argv(roles.CONTROLLER, cmd)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reshard_proc = proc
        observer.started()
        moved = keys = 0
        tail: list[bytes] = []
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(proc.stderr.read())
        try:
            async for line in proc.stdout:
                m = _MOVED_SLOT.match(line)
                if m:
                    moved += 1
                    keys += len(m.group(2))
                    observer.progress(moved, total, "slots")
                else:
                    tail = [*tail[-19:], line.rstrip()]
            rc = await proc.wait()
            err = await stderr_task
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            self._reshard_proc = None
        if rc != 0 or moved != total:
            detail = (err or b"").decode(errors="replace") + b"\n".join(tail).decode(
                errors="replace"
            )
            raise RuntimeError(
                f"redis-cli --cluster reshard failed (exit {rc}, {moved}/{total} slots):\n"
                + detail[-2000:]
            )
        observer.finished()
        return MigrationResult(
            slots_moved=moved,
            keys_moved=keys,
            details={
                "tool": "redis-cli --cluster reshard",
                "command": " ".join(cmd[1:]),
                "tool_seconds": round(time.monotonic() - started, 3),
            },
        )

    async def slot_owners(self) -> dict[int, str]:
        """Slot owners from ``CLUSTER SHARDS``, asked of every node; they must agree."""
        maps: list[dict[int, str]] = []
        by_id = {node_id: self._node_name(i) for i, node_id in enumerate(self._ids)}
        for node in self._nodes:
            c = node.client(decode_responses=True)
            try:
                shards = await c.execute_command("CLUSTER", "SHARDS")
            finally:
                await c.aclose()
            owners: dict[int, str] = {}
            for shard in shards:
                shard = resp_map(shard)
                masters = [
                    resp_map(n) for n in shard["nodes"] if resp_map(n).get("role") == "master"
                ]
                if not masters:
                    continue
                name = by_id.get(masters[0]["id"], masters[0]["id"])
                ranges = shard["slots"]
                for lo, hi in zip(ranges[::2], ranges[1::2], strict=True):
                    for s in range(int(lo), int(hi) + 1):
                        owners[s] = name
            maps.append(owners)
        if any(m != maps[0] for m in maps[1:]):
            raise RuntimeError("cluster nodes disagree about slot owners (CLUSTER SHARDS)")
        return maps[0]

    async def keys_per_node(self) -> dict[str, int]:
        """``DBSIZE`` of every node, by node name."""
        out: dict[str, int] = {}
        for i, node in enumerate(self._nodes):
            c = node.client()
            try:
                out[self._node_name(i)] = int(await c.dbsize())
            finally:
                await c.aclose()
        return out

    async def server_counters(self) -> dict[str, int]:
        """Per node: CPU ms (``cpu_ms_<node>``) and connections accepted
        (``connections_<node>``); over all nodes: ``INFO errorstats`` (``errorstat_<CODE>``)."""
        total: dict[str, int] = {}
        for i, node in enumerate(self._nodes):
            name = self._node_name(i)
            total[f"cpu_ms_{name}"] = round(node.cpu_seconds() * 1000)
            c = node.client()
            try:
                stats = await c.info("errorstats")
                conns = (await c.info("stats"))["total_connections_received"]
            finally:
                await c.aclose()
            total[f"connections_{name}"] = int(conns)
            for key, value in stats.items():
                count = value.get("count", 0) if isinstance(value, dict) else 0
                total[key] = total.get(key, 0) + int(count)
        return total

    async def teardown(self) -> None:
        proc = self._reshard_proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        nodes, self._nodes = self._nodes, []
        for n in nodes:
            n.stop()
        self._ids = []
        cg, self._cgroups = self._cgroups, None
        if cg is not None:
            cg.down()

    def _join(self, index: int) -> Any:
        """``start_redis``'s command wrapper for node ``index`` (None without budgets)."""
        cg = self._cgroups
        return None if cg is None else cg.wrapper(roles.server_role(index))

    def validate_options(self, options: Mapping[str, Any]) -> None:
        self._client_option(options)
        roles.parse(options.get("cpu"), int(options.get("masters", 2)))

    def cpu_budgets(self) -> dict[str, Any] | None:
        return None if self._cgroups is None else self._cgroups.budgets_dict()

    def cpu_usage(self) -> dict[str, Any] | None:
        return None if self._cgroups is None else dict(self._cgroups.usage() or {}) or None


class TunedRedisClusterSystem(RedisClusterSystem):
    """The same cluster and resharding, with a client that does not bound the run.

    By default the load client is the lean cluster client
    (:mod:`netmigrate.bench.peers.cluster_client`): it patches the slot map per MOVED and
    costs a fraction of redis-py's CPU per operation, so the same client budget drives the
    nodes close to their own budget (docs/benchmarks.md has the measured split). With
    ``cluster_client="redis-py"`` it is redis-py with ``reinitialize_steps=0`` (no periodic
    full topology rebuild, which closes every connection; see the module docstring), the best
    redis-py configuration for resharding we found.
    """

    name = "redis-cluster-tuned"
    description = (
        "Redis Cluster live resharding, lean pipelined cluster client (hiredis; patches the "
        "slot map per MOVED)"
    )
    default_reinitialize_steps = 0
    default_client = LEAN


async def _node_converged(c: Any, want: int) -> bool:
    """The node is in state ok and linked to all ``want`` nodes (itself included)."""
    info = await c.execute_command("CLUSTER", "INFO")
    if isinstance(info, dict):
        fields = {k: str(v) for k, v in info.items()}
    else:
        text = info if isinstance(info, str) else info.decode()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if fields.get("cluster_state") != "ok" or int(fields.get("cluster_known_nodes", 0)) != want:
        return False
    nodes = await c.execute_command("CLUSTER", "NODES")
    if isinstance(nodes, dict):  # redis-py may parse CLUSTER NODES into address -> fields
        return len(nodes) == want and all(
            n.get("connected") and "handshake" not in n.get("flags", "") for n in nodes.values()
        )
    text = nodes if isinstance(nodes, str) else nodes.decode()
    lines = [line.split() for line in text.splitlines() if line.strip()]
    return len(lines) == want and all(
        len(f) > 7 and f[7] == "connected" and "handshake" not in f[2] for f in lines
    )


def resp_map(obj: Any) -> dict[str, Any]:
    """CLUSTER SHARDS answers maps as flat lists in RESP2; accept both shapes."""
    if isinstance(obj, dict):
        return obj
    it = iter(obj)
    return {str(k): v for k, v in zip(it, it, strict=True)}


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``redis-cli`` with ``args``, for tests and diagnostics."""
    return subprocess.run([redis_cli_binary(), *args], capture_output=True, text=True, check=False)
