"""The conformance harness: target selection, a threaded P4Runtime session, the PTF dataplane.

Target (environment):

* ``NETMIGRATE_CONFORMANCE_TARGET`` = ``lab`` (default) or ``bmv2``.
* Managed mode (default): the harness builds its own bare lab topology (prefix ``nmt4-``: one
  namespace per test host, each host's ``eth0`` wired to switch port 1..4 in ``nmt4-…-sw``) and
  starts the target on it: ``netmigrate switch`` (device id 1), or ``simple_switch_grpc``
  (device id 0) from ``NETMIGRATE_BMV2_SWITCH`` (default: ``simple_switch_grpc`` on PATH, else
  ``/opt/p4/bin/simple_switch_grpc``) loaded by P4Runtime with the compiled JSON of
  ``NETMIGRATE_BMV2_JSON`` (required for bmv2).
* External mode: ``NETMIGRATE_CONFORMANCE_GRPC=HOST:PORT`` (or ``unix:/path``) names a running
  target; ``NETMIGRATE_CONFORMANCE_PORTS="1=IFACE,2=NS:IFACE,…"`` says which interface
  (optionally inside namespace NS) is wired to each switch port 1..4;
  ``NETMIGRATE_CONFORMANCE_DEVICE_ID`` defaults to 1 (lab) / 0 (bmv2).

PTF is used as a library: its ``DataPlane`` (AF_PACKET capture thread, per-port queues) and
``testutils`` (``send_packet``, ``verify_packet``, ``verify_no_other_packets``) driven from
pytest through a small adapter object that stands for the unittest ``self`` they expect.
Running ptf's own runner as a subprocess would hide individual failures from pytest and pay
the switch start-up for every invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ptf
import ptf.dataplane
import ptf.ptfutils
from finsy import (
    P4CounterEntry,
    P4DigestEntry,
    P4DigestList,
    P4PacketIn,
    P4PacketOut,
    Switch,
    SwitchOptions,
)

from netmigrate import resources
from netmigrate.netns import call_in_netns

TARGET_ENV = "NETMIGRATE_CONFORMANCE_TARGET"
GRPC_ENV = "NETMIGRATE_CONFORMANCE_GRPC"
DEVICE_ID_ENV = "NETMIGRATE_CONFORMANCE_DEVICE_ID"
PORTS_ENV = "NETMIGRATE_CONFORMANCE_PORTS"
BMV2_JSON_ENV = "NETMIGRATE_BMV2_JSON"
BMV2_BIN_ENV = "NETMIGRATE_BMV2_SWITCH"
BMV2_DEFAULT_BIN = "/opt/p4/bin/simple_switch_grpc"

#: Switch ports the suite uses (1 = client, 2..4 = servers 1..3).
PORT_COUNT = 4
#: Seconds to wait for an expected packet / to make sure no other packet comes.
POSITIVE_TIMEOUT = 2.0
NEGATIVE_TIMEOUT = 0.3
RECV_SIZE = 16384


class HarnessError(RuntimeError):
    """The conformance target is misconfigured (the message says how to fix it)."""


@dataclass(frozen=True, slots=True)
class TargetConfig:
    kind: str  # "lab" | "bmv2"
    device_id: int
    #: An already running target (external mode), or None: the harness starts one.
    grpc_addr: str | None = None
    #: External mode: switch port -> (netns or None, interface) of the test side.
    ports: dict[int, tuple[str | None, str]] = field(default_factory=dict)
    bmv2_bin: str | None = None
    bmv2_json: Path | None = None

    @property
    def p4blob(self) -> bytes:
        """The P4Runtime device config: BMv2's compiled JSON; nothing for the lab switch."""
        if self.kind == "bmv2":
            assert self.bmv2_json is not None
            return self.bmv2_json.read_bytes()
        return b""

    def describe(self) -> str:
        where = self.grpc_addr or "started by the harness"
        return f"{self.kind} (device id {self.device_id}, {where})"


def _parse_ports(text: str) -> dict[int, tuple[str | None, str]]:
    ports: dict[int, tuple[str | None, str]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        num, sep, where = item.partition("=")
        if not sep or not num.strip().isdigit() or not where:
            raise HarnessError(f"{PORTS_ENV}: bad item {item!r}, want PORT=IFACE or PORT=NS:IFACE")
        ns, _, iface = where.rpartition(":")
        ports[int(num)] = (ns or None, iface)
    missing = set(range(1, PORT_COUNT + 1)) - set(ports)
    if missing:
        raise HarnessError(f"{PORTS_ENV}: switch ports {sorted(missing)} are not mapped")
    return ports


def config_from_env(env: dict[str, str] | None = None) -> TargetConfig:
    env = dict(os.environ if env is None else env)
    kind = env.get(TARGET_ENV, "lab").strip().lower() or "lab"
    if kind not in ("lab", "bmv2"):
        raise HarnessError(f"{TARGET_ENV}={kind!r}: want 'lab' or 'bmv2'")
    default_device = 0 if kind == "bmv2" else 1
    device_text = env.get(DEVICE_ID_ENV, str(default_device))
    if not device_text.isdigit():
        raise HarnessError(f"{DEVICE_ID_ENV}={device_text!r} is not a number")
    grpc_addr = env.get(GRPC_ENV) or None
    ports = _parse_ports(env[PORTS_ENV]) if grpc_addr else {}
    if grpc_addr is None and PORTS_ENV in env:
        raise HarnessError(f"{PORTS_ENV} is only used with {GRPC_ENV} (an external target)")
    bmv2_bin = bmv2_json = None
    if kind == "bmv2":
        json_text = env.get(BMV2_JSON_ENV)
        if not json_text:
            raise HarnessError(f"{TARGET_ENV}=bmv2 needs {BMV2_JSON_ENV}=<compiled p4c JSON>")
        bmv2_json = Path(json_text)
        if not bmv2_json.is_file():
            raise HarnessError(f"{BMV2_JSON_ENV}: {bmv2_json} does not exist")
        if grpc_addr is None:
            bmv2_bin = env.get(BMV2_BIN_ENV) or shutil.which("simple_switch_grpc")
            bmv2_bin = bmv2_bin or BMV2_DEFAULT_BIN
            if not os.access(bmv2_bin, os.X_OK):
                raise HarnessError(f"no simple_switch_grpc at {bmv2_bin} (set {BMV2_BIN_ENV})")
    return TargetConfig(
        kind=kind,
        device_id=int(device_text),
        grpc_addr=grpc_addr,
        ports=ports,
        bmv2_bin=bmv2_bin,
        bmv2_json=bmv2_json,
    )


# --- P4Runtime ------------------------------------------------------------------------------


class P4RTSession:
    """One primary P4Runtime connection (finsy) on its own event-loop thread.

    The tests are synchronous (PTF's checks block), so the asyncio client lives on a
    background loop; packet-ins and digests are drained into thread-safe queues from the
    moment the stream is up, so none is lost between tests. Digest lists are acknowledged at
    once: a target may withhold an identical digest until the previous one is acked.

    Every stream write (packet-out, digest ack) holds ``_stream_lock``: finsy writes to the gRPC
    stream without serialising, and two overlapping writes on one grpc.aio stream fail with
    "Internal error from Core" (seen against BMv2 when an ack met a packet-out).
    """

    def __init__(self, address: str, device_id: int, p4blob: bytes) -> None:
        self.packet_ins: queue.Queue[P4PacketIn] = queue.Queue()
        self.digests: queue.Queue[P4DigestList] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        options = SwitchOptions(
            p4info=resources.p4info_path(),
            p4blob=p4blob,
            p4force=True,
            device_id=device_id,
        )
        self.switch = Switch("conformance", address, options)
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_lock: asyncio.Lock | None = None
        try:
            self.call(self._open(), timeout=60)
        except BaseException:
            self._stop_loop()
            raise

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self) -> None:
        self._stream_lock = asyncio.Lock()
        await self.switch.__aenter__()
        self._tasks.append(asyncio.create_task(self._pump_packets()))
        self._tasks.append(asyncio.create_task(self._pump_digests()))
        # Let both readers register their queues before any packet can arrive.
        await asyncio.sleep(0)

    async def _pump_packets(self) -> None:
        async for packet in self.switch.read_packets():
            self.packet_ins.put(packet)

    async def _pump_digests(self) -> None:
        async for digest in self.switch.read_digests("slot_transition_t"):
            self.digests.put(digest)
            await self._stream_write(digest.ack())

    async def _stream_write(self, message: Any) -> None:
        assert self._stream_lock is not None
        async with self._stream_lock:
            await self.switch.write([message])

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.switch.__aexit__(None, None, None)

    def close(self) -> None:
        try:
            self.call(self._close(), timeout=30)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    # --- entities ---

    def insert(self, entities: Iterable[Any]) -> None:
        self.call(self.switch.insert(list(entities)))

    def read(self, entity: Any) -> list[Any]:
        async def collect() -> list[Any]:
            return [e async for e in self.switch.read(entity)]

        return self.call(collect())

    def counters(self, name: str) -> dict[int, tuple[int, int]]:
        """Every index of indirect counter ``name``: (packets, bytes)."""
        return {
            e.index: (e.packet_count, e.byte_count)
            for e in self.read(P4CounterEntry(name))
            if e.index is not None
        }

    def configure_digest(self, name: str) -> None:
        self.insert([P4DigestEntry(name, max_list_size=1, max_timeout_ns=0, ack_timeout_ns=10**9)])

    # --- stream ---

    def packet_out(self, payload: bytes, *, egress_port: int = 0, submit: bool = True) -> None:
        pkt = P4PacketOut(payload, egress_port=egress_port, submit_to_ingress=int(submit), _pad=0)
        self.call(self._stream_write(pkt))

    def next_packet_in(self, timeout: float = POSITIVE_TIMEOUT) -> P4PacketIn | None:
        try:
            return self.packet_ins.get(timeout=timeout)
        except queue.Empty:
            return None

    def next_digest(self, timeout: float = POSITIVE_TIMEOUT) -> P4DigestList | None:
        try:
            return self.digests.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> tuple[list[P4PacketIn], list[P4DigestList]]:
        """Whatever is queued now (stray packet-ins / digests), emptying the queues."""
        return _drain(self.packet_ins), _drain(self.digests)

    def drain_packet_ins(self) -> list[P4PacketIn]:
        return _drain(self.packet_ins)


def _drain(q: queue.Queue[Any]) -> list[Any]:
    items = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(q.get_nowait())
    return items


# --- PTF dataplane ------------------------------------------------------------------------


class PtfTest:
    """What ``ptf.testutils`` expects of its ``test`` argument (a ptf BaseTest's ``self``)."""

    def __init__(self, dataplane: ptf.dataplane.DataPlane) -> None:
        self.dataplane = dataplane

    def before_send(self, pkt: bytes, device_number: int = 0, port_number: int = -1) -> None:
        pass

    def at_receive(self, pkt: bytes, device_number: int = 0, port_number: int = -1) -> None:
        pass

    def fail(self, msg: str) -> None:
        raise AssertionError(msg)

    def flush(self) -> None:
        with self.dataplane.cvar:
            self.dataplane.flush()


def open_dataplane(ports: dict[int, tuple[str | None, str]]) -> ptf.dataplane.DataPlane:
    """A PTF DataPlane with device 0 port N on the given (netns, interface) of switch port N."""
    ptf.config.update({"relax": False, "platform": "linux"})
    ptf.ptfutils.default_timeout = POSITIVE_TIMEOUT
    ptf.ptfutils.default_negative_timeout = NEGATIVE_TIMEOUT
    dp = ptf.dataplane.DataPlane(
        config={"platform": "linux", "qlen": 1000, "socket_recv_size": RECV_SIZE}
    )
    ptf.dataplane_instance = dp
    try:
        for port, (ns, iface) in sorted(ports.items()):
            if ns is None:
                dp.port_add(iface, 0, port)
            else:
                # The AF_PACKET socket is created inside the host's namespace and stays there.
                call_in_netns(ns, dp.port_add, iface, 0, port)
    except BaseException:
        dp.kill()
        raise
    return dp
