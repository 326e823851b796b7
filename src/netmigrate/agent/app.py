"""The agent process: prepares its Redis, restores slot ownership, serves UDP and gRPC.

``Agent`` runs on the caller's event loop, so tests can run it in-process; ``netmigrate
agent`` (``cli.py``) wraps it in a process with signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from netmigrate.agent import dedup, redis_version, slot_store
from netmigrate.agent.config import AgentConfig, RedisTarget, default_max_datagram
from netmigrate.agent.control import format_address, start_control_server
from netmigrate.agent.datapath import DataPath
from netmigrate.agent.heat import SlotHeat
from netmigrate.agent.lost import describe_loss
from netmigrate.agent.migration_store import MigrationStore
from netmigrate.agent.peers import Peers
from netmigrate.agent.redis_node import ensure_single_node_cluster_async
from netmigrate.agent.reserved import AGENT_ALIVE_KEY, slot_tag
from netmigrate.agent.slots import SlotState, SlotTable
from netmigrate.agent.source import SourceSide
from netmigrate.agent.source.keys import CopyLimits
from netmigrate.agent.stats import AgentStats
from netmigrate.agent.target import TargetSide
from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slotset import format_ranges

log = logging.getLogger("netmigrate.agent")

_RECONNECT_MIN = 0.05
_RECONNECT_MAX = 2.0
#: How often the agent checks that its Redis still holds its state (a restart without
#: persistence, FLUSHALL or an eviction removes it; #12, item 8).
DATA_CHECK_INTERVAL = 0.5


def admin_client(target: RedisTarget) -> redis.asyncio.Redis:
    """A redis-py client for the agent's control-plane calls (not the data path)."""
    kwargs: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "client_name": "netmigrate-agent-admin",
        # redis-py retries by default, wrong credentials included (seconds of backoff):
        # the agent's callers decide about retrying, so fail fast and clearly.
        "retry": Retry(NoBackoff(), 0),
    }
    if target.unix_path:
        return redis.asyncio.Redis(unix_socket_path=target.unix_path, **kwargs)
    return redis.asyncio.Redis(host=target.host, port=target.port, ssl=target.tls, **kwargs)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stats = AgentStats()
        self.dedup = dedup.DedupWindow(
            max_entries=config.dedup_entries,
            max_per_client=config.dedup_per_client,
            max_bytes=config.dedup_bytes,
        )
        self.table = SlotTable()
        #: Requests per slot lately: the data path counts, a migration's order follows.
        self.heat = SlotHeat()
        self._heat_decay: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None
        self.control_port: int | None = None
        self._admin: redis.asyncio.Redis | None = None
        self._datapath: DataPath | None = None
        self._control: grpc.aio.Server | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._data_watch: asyncio.Task[None] | None = None
        self._data_check: asyncio.Task[None] | None = None
        #: Why this agent no longer answers for any slot ("" while its Redis is intact).
        self.data_lost = ""
        #: Redis' run_id when the agent last saw its data intact (a restart changes it).
        self.redis_run_id = ""
        self._stopping = False
        self.source: SourceSide | None = None
        self.target: TargetSide | None = None
        #: The persisted migration state, None while the agent starts.
        self.store: MigrationStore | None = None
        #: The Redis behind this agent (reported to peers: see GetSlots).
        self.redis_version: redis_version.RedisVersion | None = None
        self._peers: Peers | None = None

    async def start(self) -> None:
        """Prepare Redis and start serving; raises (with a clear message) when it cannot."""
        cfg = self.config
        log.info(
            "agent keyspace %d server %d: Redis %s",
            cfg.keyspace,
            cfg.server_id,
            cfg.redis.display(),
        )
        try:
            self._admin = admin_client(cfg.redis)
            result = await ensure_single_node_cluster_async(self._admin)
            if result.changed:
                log.info("added %d slots: Redis is now a single-node cluster", result.added_slots)
            self.table = await self._restore_ownership()
            await self._admin.set(AGENT_ALIVE_KEY, b"1")
            self.redis_run_id = await _run_id(self._admin)
            self.redis_version = await redis_version.probe(self._admin)
            max_datagram = cfg.max_datagram
            if max_datagram is None:
                max_datagram, origin = default_max_datagram(cfg)
                log.info("largest datagram %d bytes (%s)", max_datagram, origin)
            self._datapath = DataPath(
                keyspace=cfg.keyspace,
                server_id=cfg.server_id,
                table=self.table,
                dedup=self.dedup,
                stats=self.stats,
                max_datagram=max_datagram,
                max_batch=cfg.max_batch,
                heat=self.heat,
            )
            await self._datapath.connect(cfg.redis)
            # Before the socket opens: a retry of a write applied before a crash must find
            # its request id remembered (D16).
            restored = self._datapath.restore(await dedup.load_records(self._admin))
            if restored:
                log.info("restored %d recent request ids from Redis", restored)
            store = MigrationStore(
                self._admin,
                cfg.keyspace,
                cfg.server_id,
                self.table,
                redis_target=cfg.redis,
                alive_key=AGENT_ALIVE_KEY,
            )
            # A write refused for lost data: say so now, not at the next periodic check.
            store.on_lost = self._check_data_soon
            records = await store.load_slots()
            await store.load_epochs()
            self.store = store
            self._peers = Peers(cfg.peer_tls)
            self.target = TargetSide(
                datapath=self._datapath,
                table=self.table,
                store=store,
                admin=self._admin,
                peers=self._peers,
                server_id=cfg.server_id,
                hold_limit=cfg.hold_limit,
                hold_timeout=cfg.hold_timeout,
            )
            await self.target.load(records)
            self.source = SourceSide(
                datapath=self._datapath,
                table=self.table,
                dedup=self.dedup,
                store=store,
                admin=self._admin,
                peers=self._peers,
                keyspace=cfg.keyspace,
                server_id=cfg.server_id,
                service=cfg.service,
                control_address=cfg.advertise_control or "",
                redis_target=cfg.redis,
                copy_limits=CopyLimits(cfg.copy_batch_bytes, cfg.copy_chunk_bytes),
                heat=self.heat,
            )
            self._datapath.source = self.source
            self._datapath.target = self.target
            # The reserved keys' slot tags cost ~0.1 s of CPU to find, once: found before
            # serving, not at this agent's first migration, where they held its loop (every
            # client of its slots and the migration's first wave) ~0.5 s at its CPU budget.
            slot_tag(0)
            self.address = self._datapath.bind(*cfg.listen)
            self._supervisor = asyncio.create_task(self._supervise_redis())
            self._data_watch = asyncio.create_task(self._watch_redis_data())
            self._heat_decay = asyncio.create_task(self.heat.run())
            if cfg.control is not None:
                self._control, self.control_port = await start_control_server(
                    self, *cfg.control, cfg.control_tls
                )
                if not self.source.control_address:
                    self.source.control_address = format_address(cfg.control[0], self.control_port)
            self.target.start()
            # Slots in flight continue (every step is idempotent); needs the data socket.
            await self.source.load(records)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "serving UDP %s:%d%s",
            *self.address,
            f", control gRPC port {self.control_port}" if self._control else "",
        )

    async def _restore_ownership(self) -> SlotTable:
        cfg = self.config
        assert self._admin is not None
        state = await slot_store.load(self._admin)
        if state is None:
            table = SlotTable(cfg.initial_slots)
            await slot_store.save(self._admin, cfg.keyspace, cfg.server_id, table)
            log.info("ownership initialised from --slots: %s", _describe(table))
            return table
        slot_store.check_identity(state, cfg.keyspace, cfg.server_id)
        log.info("ownership restored from Redis: %s", _describe(state.table))
        return state.table

    async def _supervise_redis(self) -> None:
        """Reconnect the data-path connection when Redis goes away; BUSY meanwhile."""
        datapath = self._datapath
        assert datapath is not None
        delay = _RECONNECT_MIN
        while not self._stopping:
            conn = datapath.redis
            if conn is not None and conn.is_open:
                await conn.closed
                if self._stopping:
                    return
                log.warning("lost the connection to Redis; answering BUSY while reconnecting")
            try:
                # Before serving again: a Redis that restarted without its data must not
                # take a single write for a slot this agent no longer has (#12.8).
                await self._check_redis_data()
                await datapath.connect(self.config.redis)
            except (TimeoutError, OSError, PermissionError, redis.exceptions.RedisError) as e:
                log.warning("reconnecting to Redis failed: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            self.stats.redis_reconnects += 1
            delay = _RECONNECT_MIN
            log.info("reconnected to Redis")

    async def _watch_redis_data(self) -> None:
        """Notice that Redis lost the agent's data: its liveness key (written at start,
        never expired, never rewritten) is gone. Whatever else went with it (keys, request id
        records, migration markers) cannot be answered for any more."""
        while not self._stopping and not self.data_lost:
            await asyncio.sleep(DATA_CHECK_INTERVAL)
            try:
                await self._check_redis_data()
            except (redis.exceptions.RedisError, OSError):
                continue  # unreachable is not lost: the data path answers BUSY meanwhile

    def _check_data_soon(self) -> None:
        if self._data_check is None or self._data_check.done():
            self._data_check = asyncio.create_task(self._check_redis_data_quietly())

    async def _check_redis_data_quietly(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._check_redis_data()

    async def _check_redis_data(self) -> None:
        """The liveness key gone means the data is gone; the run id says how (a new one: a
        restart without persistence; the same: FLUSHALL or an eviction). A restart that kept
        the data only updates the run id."""
        admin = self._admin
        assert admin is not None
        if self.data_lost:
            return
        present = await admin.exists(AGENT_ALIVE_KEY)
        run_id = await _run_id(admin)
        if present:
            self.redis_run_id = run_id
            return
        await self._lost_data(
            describe_loss(
                self.config.server_id,
                self.redis_run_id,
                run_id,
                "the agent's state is gone (a restart without persistence, FLUSHALL or "
                "an eviction)",
            )
        )

    async def _lost_data(self, why: str) -> None:
        """Stop answering for every slot: requests get WRONG_OWNER, never an answer from data
        that is gone. The empty ownership is written back, so that a restart of the agent does
        not claim its configured slots again while another agent may own them."""
        if self.data_lost:  # a periodic and a prompted check may both have seen the loss
            return
        self.data_lost = why
        owned = self.table.owner_count()
        self.table.set_state(range(SLOT_COUNT), SlotState.NOT_OWNED)
        # Slots migrating in or out lost their state too: their migrations fail, explicitly.
        if self.target is not None:
            self.target.redis_lost(why)
        log.error(
            "%s: this agent no longer answers for any slot (it owned %d); restore the data, "
            "then reconcile the slot map",
            why,
            owned,
        )
        try:
            assert self._admin is not None
            await slot_store.save(
                self._admin, self.config.keyspace, self.config.server_id, self.table
            )
        except (redis.exceptions.RedisError, OSError) as e:
            log.error("could not record the lost ownership in Redis: %s", e)
        if self.source is not None:
            await self.source.redis_lost(why)

    async def stop(self) -> None:
        self._stopping = True
        if self._data_check is not None:
            self._data_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._data_check
        if self._data_watch is not None:
            self._data_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._data_watch
            self._data_watch = None
        if self._heat_decay is not None:
            self._heat_decay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heat_decay
            self._heat_decay = None
        for side in (self.source, self.target):
            if side is not None:
                await side.stop()
        if self._control is not None:
            await self._control.stop(grace=0.5)
            self._control = None
        if self._datapath is not None:
            self._datapath.close()
            if self._datapath.redis is not None:
                self._datapath.redis.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._peers is not None:
            await self._peers.close()
            self._peers = None
        if self._admin is not None:
            await self._admin.aclose()
            self._admin = None

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _run_id(admin: redis.asyncio.Redis) -> str:
    info = await admin.info("server")
    return str(info.get("run_id", ""))


def _describe(table: SlotTable) -> str:
    owned = table.owner_count()
    ranges = format_ranges(table.owner_ranges())
    if len(ranges) > 120:  # a fragmented map would flood the log
        ranges = ranges[:120].rsplit(",", 1)[0] + ",..."
    return f"{owned} slots owned ({ranges})"
