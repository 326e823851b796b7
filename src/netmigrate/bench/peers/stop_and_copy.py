"""Peer: stop-and-copy between two standalone redis-server instances.

What an operator does without live migration support, in its strongest reasonable form:

1. **stop** — writes to the moving slots are held (every other slot keeps full service, and
   reads of the moving slots keep going to the source, which still has every value);
   writes already in flight to those slots are drained first;
2. **copy** — the operator tool (:mod:`netmigrate.bench.peers.sc_mover`, its own process)
   finds the slots' keys with ``SCAN`` and copies them with ``MIGRATE ... COPY REPLACE``;
3. **switch** — the routing for the moving slots points at the target; held writes are
   released and go to the target;
4. **clean up** — once reads in flight to the source have returned, the source's old copies
   are deleted (``UNLINK``).

Routing is a slot map shared by all clients of the system (the role a proxy or a client
configuration service plays in production); switching it is instantaneous here, so the
peer's numbers are a lower bound of what a real deployment pays. Clients do not get
errors: a held write just waits, and each hold is counted as a ``WRITE_HELD`` client event.
The write pause (step 1 to 3) is reported as ``details.write_pause_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import redis
from redis.asyncio import Redis

from netmigrate.bench import roles
from netmigrate.bench.kv import WRITE_HELD, ClientEvents
from netmigrate.bench.redis_server import HOST, RedisServer, redis_version, start_redis
from netmigrate.bench.system import MigrationObserver, MigrationResult, SetupPlan, System
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot
from netmigrate.protocol.slotset import to_ranges

SOURCE, TARGET = 0, 1
#: Name of the peer's cgroups (``nm-lab-<prefix>/<role>``), apart from every lab's.
CGROUP_PREFIX = "nmbsc"


class SlotRouter:
    """Slot -> server map with per-slot write holds (one per system, shared by its clients).

    It also counts, per slot, the reads and writes in flight *to the source*, so the
    migration can wait for exactly the operations that could still change (writes, before
    the copy) or read (anything, before the cleanup) the source's copy of a moving slot.
    """

    def __init__(self) -> None:
        self.owner = bytearray(SLOT_COUNT)  # SOURCE everywhere
        self.frozen = bytearray(SLOT_COUNT)
        self.src_reads = array("q", bytes(8 * SLOT_COUNT))
        self.src_writes = array("q", bytes(8 * SLOT_COUNT))
        # numpy views of the same memory: checking 8192 slots costs microseconds.
        self._reads_view = np.frombuffer(self.src_reads, dtype=np.int64)
        self._writes_view = np.frombuffer(self.src_writes, dtype=np.int64)
        self._thawed = asyncio.Event()
        self._thawed.set()

    def freeze(self, slots: Sequence[int]) -> None:
        for s in slots:
            self.frozen[s] = 1
        self._thawed.clear()

    def switch_and_thaw(self, slots: Sequence[int], to: int) -> None:
        for s in slots:
            self.owner[s] = to
        for s in slots:
            self.frozen[s] = 0
        self._thawed.set()

    async def wait_thawed(self, slot: int) -> None:
        while self.frozen[slot]:
            await self._thawed.wait()

    async def drain_source(
        self, slots: Sequence[int], *, writes_only: bool, timeout: float = 30.0
    ) -> None:
        """Wait until no write (or no operation at all) on ``slots`` is in flight to the
        source. Only operations issued before the call can be counted: new writes to frozen
        slots are held, and after the switch nothing new for these slots goes to the source."""
        idx = np.asarray(slots, dtype=np.intp)
        deadline = time.monotonic() + timeout
        while self._writes_view[idx].any() or (not writes_only and self._reads_view[idx].any()):
            if time.monotonic() > deadline:
                raise TimeoutError("operations on the moving slots did not drain")
            await asyncio.sleep(0.0005)


class RoutedClient:
    """:class:`~netmigrate.bench.kv.KVClient` over two standalone servers and a router."""

    def __init__(self, router: SlotRouter, conns: list[Redis], events: ClientEvents) -> None:
        self._router = router
        self._conns = conns
        self._events = events

    async def get(self, key: bytes) -> bytes | None:
        router = self._router
        slot = key_slot(key)
        server = router.owner[slot]
        if server != SOURCE:
            return await self._conns[server].get(key)
        counts = router.src_reads
        counts[slot] += 1
        try:
            return await self._conns[SOURCE].get(key)
        finally:
            counts[slot] -= 1

    async def set(self, key: bytes, value: bytes) -> None:
        router = self._router
        slot = key_slot(key)
        if router.frozen[slot]:
            self._events.event(WRITE_HELD)
            await router.wait_thawed(slot)
        # No await between the frozen check and the count: a freeze sees this write.
        server = router.owner[slot]
        if server != SOURCE:
            await self._conns[server].set(key, value)
            return
        counts = router.src_writes
        counts[slot] += 1
        try:
            await self._conns[SOURCE].set(key, value)
        finally:
            counts[slot] -= 1

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        groups: dict[int, dict[bytes, bytes]] = {}
        for k, v in items:
            groups.setdefault(self._router.owner[key_slot(k)], {})[k] = v
        for server, mapping in groups.items():
            await self._conns[server].mset(mapping)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        by_server: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_server.setdefault(self._router.owner[key_slot(k)], []).append(i)
        out: list[bytes | None] = [None] * len(keys)
        for server, idx in by_server.items():
            values = await self._conns[server].mget([keys[i] for i in idx])
            for i, v in zip(idx, values, strict=True):
                out[i] = v
        return out

    async def aclose(self) -> None:
        for c in self._conns:
            await c.aclose()


class _Mover:
    """The running :mod:`sc_mover` process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls,
        source: RedisServer,
        target: RedisServer,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> _Mover:
        argv = [
            sys.executable, "-m", "netmigrate.bench.peers.sc_mover",
            "--host", HOST, "--source-port", str(source.port),
            "--target-port", str(target.port),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *(argv if wrap is None else wrap(argv)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        mover = cls(proc)
        await mover.expect("ready")
        return mover

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise RuntimeError(f"stop-and-copy mover is gone: {exc}") from exc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            rc = await self.proc.wait()
            raise RuntimeError(f"stop-and-copy mover exited ({rc}) unexpectedly")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"stop-and-copy mover failed: {msg['error']}")
        return msg

    async def expect(self, key: str) -> dict[str, Any]:
        msg = await self.read()
        if key not in msg:
            raise RuntimeError(f"stop-and-copy mover: expected {key!r}, got {msg}")
        return msg

    async def close(self) -> None:
        proc = self.proc
        if proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


class StopAndCopySystem(System):
    name = "stop-and-copy"
    description = "stop-and-copy: hold writes, MIGRATE COPY, switch routing, delete old copies"

    def __init__(self) -> None:
        self._servers: list[RedisServer] = []
        self._router: SlotRouter | None = None
        self._mover: _Mover | None = None
        self._batch = 500
        self._cgroups: roles.RoleCgroups | None = None

    @property
    def source(self) -> str:
        return "source"

    @property
    def target(self) -> str:
        return "target"

    @property
    def servers(self) -> list[RedisServer]:
        return list(self._servers)

    def info(self) -> dict[str, Any]:
        return {
            "servers": 2,
            "redis_version": redis_version(),
            "client": f"redis-py {redis.__version__} redis.asyncio.Redis + slot router",
            "copy": f"SCAN + MIGRATE COPY REPLACE KEYS (batch {self._batch}), then UNLINK",
        }

    async def setup(self, plan: SetupPlan) -> None:
        self._batch = int(plan.options.get("copy_batch", 500))
        if self._batch < 1:
            raise ValueError(f"copy batch must be >= 1, got {self._batch}")
        budgets = roles.parse(plan.options.get("cpu"), 2)
        try:
            if budgets is not None:
                self._cgroups = roles.RoleCgroups(CGROUP_PREFIX, budgets)
                self._cgroups.up()
            cg = self._cgroups
            for i, name in enumerate(("source", "target")):
                wrap = None if cg is None else cg.wrapper(roles.server_role(i))
                self._servers.append(await start_redis(name=name, wrap=wrap))
            self._router = SlotRouter()
            # Started now so the write pause does not include Python's start-up.
            self._mover = await _Mover.start(
                self._servers[SOURCE],
                self._servers[TARGET],
                None if cg is None else cg.wrapper(roles.CONTROLLER),
            )
        except BaseException:
            await self.teardown()
            raise

    async def client(self, events: ClientEvents) -> RoutedClient:
        if self._router is None:
            raise RuntimeError("stop-and-copy system is not set up")
        conns = [s.client() for s in self._servers]
        return RoutedClient(self._router, conns, events)

    async def migrate(self, slots: Sequence[int], observer: MigrationObserver) -> MigrationResult:
        router, mover = self._router, self._mover
        if router is None or mover is None:
            raise RuntimeError("stop-and-copy system is not set up")
        slots = sorted(set(slots))
        t_start = time.monotonic()
        router.freeze(slots)
        observer.started()
        try:
            await router.drain_source(slots, writes_only=True)
            t_drained = time.monotonic()
            await mover.send({"cmd": "copy", "ranges": to_ranges(slots), "batch": self._batch})
            found = await mover.expect("found")
            total = int(found["found"])
            observer.progress(0, total, "keys")
            while True:
                msg = await mover.read()
                if "copied" in msg:
                    observer.progress(int(msg["copied"]), total, "keys")
                elif "copy_done" in msg:
                    break
        except BaseException:
            # Never leave writes held: the source still has every value, so thaw in place.
            router.switch_and_thaw(slots, SOURCE)
            raise
        t_copied = time.monotonic()
        router.switch_and_thaw(slots, TARGET)
        t_switched = time.monotonic()
        await router.drain_source(slots, writes_only=False)
        await mover.send({"cmd": "cleanup"})
        deleted = int((await mover.expect("deleted"))["deleted"])
        observer.finished()
        t_end = time.monotonic()
        return MigrationResult(
            slots_moved=len(slots),
            keys_moved=total,
            details={
                "write_pause_s": round(t_switched - t_start, 4),
                "drain_s": round(t_drained - t_start, 4),
                "scan_s": float(found.get("scan_seconds", 0.0)),
                "copy_s": round(t_copied - t_drained, 4),
                "cleanup_s": round(t_end - t_switched, 4),
                "source_keys_deleted": deleted,
                "copy_batch": self._batch,
            },
        )

    async def slot_owners(self) -> dict[int, str]:
        if self._router is None:
            raise RuntimeError("stop-and-copy system is not set up")
        names = ("source", "target")
        return {s: names[o] for s, o in enumerate(self._router.owner)}

    async def keys_per_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._servers:
            c = s.client()
            try:
                out[s.name] = int(await c.dbsize())
            finally:
                await c.aclose()
        return out

    async def server_counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._servers:
            c = s.client()
            try:
                stats = await c.info("stats")
            finally:
                await c.aclose()
            out[f"{s.name}_commands"] = int(stats.get("total_commands_processed", 0))
            out[f"cpu_ms_{s.name}"] = round(s.cpu_seconds() * 1000)
            out[f"connections_{s.name}"] = int(stats.get("total_connections_received", 0))
        return out

    async def teardown(self) -> None:
        if self._mover is not None:
            await self._mover.close()
            self._mover = None
        servers, self._servers = self._servers, []
        for s in servers:
            s.stop()
        self._router = None
        cg, self._cgroups = self._cgroups, None
        if cg is not None:
            cg.down()

    def validate_options(self, options: Mapping[str, Any]) -> None:
        roles.parse(options.get("cpu"), 2)

    def cpu_budgets(self) -> dict[str, Any] | None:
        return None if self._cgroups is None else self._cgroups.budgets_dict()

    def cpu_usage(self) -> dict[str, Any] | None:
        return None if self._cgroups is None else dict(self._cgroups.usage() or {}) or None
