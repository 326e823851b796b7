"""The data plane: frames from the ports through the pipeline and out again.

Everything runs on the asyncio loop that also serves P4Runtime. Each port's socket is
watched with ``loop.add_reader``; a wakeup drains up to :data:`BURST` frames, so a busy port
costs one epoll round per burst instead of per frame, while other ports and gRPC still get
their turn. Frames are processed and sent in arrival order; a port with a delay fault sends
through a FIFO whose release times never decrease, so the order per egress port holds
(DESIGN section 6 relies on it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netmigrate.switch.errors import invalid
from netmigrate.switch.faults import Fault
from netmigrate.switch.interfaces import Output
from netmigrate.switch.ports import Port
from netmigrate.switch.runtime import SwitchRuntime

log = logging.getLogger(__name__)

#: Frames read from one port per wakeup.
BURST = 256
#: How often the RX rings are checked for a stuck reader.
WATCHDOG_S = 0.2

Process = Callable[[bytes, int, Any], list[Output]]
ProcessPacketOut = Callable[[bytes, Mapping[str, int], Any], list[Output]]


@dataclass(slots=True)
class DataplaneCounters:
    #: Frames that arrived while no pipeline was committed.
    no_pipeline: int = 0
    #: Frames the pipeline raised on (a bug: logged, the frame is dropped).
    pipeline_errors: int = 0
    #: Outputs to a port number that has no interface.
    no_port: int = 0
    packet_ins: int = 0
    packet_ins_dropped: int = 0
    packet_outs: int = 0


class _DelayQueue:
    """Frames waiting for their release time on one port, oldest first."""

    __slots__ = ("frames", "handle", "last_due")

    def __init__(self) -> None:
        self.frames: collections.deque[tuple[float, bytes]] = collections.deque()
        self.handle: asyncio.TimerHandle | None = None
        self.last_due = 0.0


def encode_controller_header(fields: Mapping[str, int], layout) -> bytes:
    """Pack ``fields`` MSB-first in P4Info order (``layout``: PacketMetadataInfo list)."""
    value = 0
    bits = 0
    for meta in layout:
        v = fields.get(meta.name, 0)
        if v >> meta.bitwidth:
            raise invalid(f"{meta.name}={v} does not fit in {meta.bitwidth} bits")
        value = (value << meta.bitwidth) | v
        bits += meta.bitwidth
    if bits % 8:
        value <<= 8 - bits % 8
        bits += 8 - bits % 8
    return value.to_bytes(bits // 8, "big")


def decode_controller_header(frame: bytes, layout) -> tuple[dict[str, int], bytes]:
    """Split a controller header off ``frame``: (fields by name, the rest)."""
    bits = sum(m.bitwidth for m in layout)
    nbytes = (bits + 7) // 8
    value = int.from_bytes(frame[:nbytes], "big") >> (nbytes * 8 - bits)
    fields: dict[str, int] = {}
    for meta in reversed(layout):
        fields[meta.name] = value & ((1 << meta.bitwidth) - 1)
        value >>= meta.bitwidth
    return fields, frame[nbytes:]


class Dataplane:
    def __init__(
        self,
        runtime: SwitchRuntime,
        ports: dict[int, Port],
        process: Process,
        process_packet_out: ProcessPacketOut | None = None,
        faults: Mapping[int, Fault] | None = None,
    ) -> None:
        self.runtime = runtime
        self.ports = ports
        self._port_list = list(ports.values())
        self._process = process
        self._process_packet_out = process_packet_out
        self.counters = DataplaneCounters()
        self.faults: dict[int, Fault] = {}
        self._queues: dict[int, _DelayQueue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog_handle: asyncio.TimerHandle | None = None
        self._random = random.Random()
        self._last_error_log = 0.0
        runtime.packet_out_handler = self.packet_out
        for port, fault in (faults or {}).items():
            self.set_fault(port, fault)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for port in self.ports.values():
            loop.add_reader(port.fileno(), self._on_readable, port)
        if any(p.uses_rings for p in self.ports.values()):
            self._watchdog_handle = loop.call_later(WATCHDOG_S, self._watchdog, {})

    def _watchdog(self, seen: dict[int, int]) -> None:
        """Unstick an RX ring whose reader and kernel lost each other (see Port.resync)."""
        for port in self._port_list:
            if port.uses_rings and seen.get(port.number) == port.counters.rx and port.resync():
                log.warning("port %d: RX ring resynchronised", port.number)
                self._on_readable(port)
            seen[port.number] = port.counters.rx
        if self._loop is not None:
            self._watchdog_handle = self._loop.call_later(WATCHDOG_S, self._watchdog, seen)

    def stop(self) -> None:
        if self._watchdog_handle is not None:
            self._watchdog_handle.cancel()
            self._watchdog_handle = None
        if self._loop is not None:
            for port in self.ports.values():
                self._loop.remove_reader(port.fileno())
        for q in self._queues.values():
            if q.handle is not None:
                q.handle.cancel()
        self._queues.clear()
        self._loop = None

    def close(self) -> None:
        self.stop()
        for port in self.ports.values():
            port.close()

    # -- faults ----------------------------------------------------------------------------

    def set_fault(self, port: int, fault: Fault) -> None:
        if port not in self.ports:
            raise ValueError(f"port {port} is not a port of this switch")
        if fault.active:
            self.faults[port] = fault
        else:
            self.faults.pop(port, None)
        log.info("port %d fault: %s", port, fault.describe())

    # -- ingress ---------------------------------------------------------------------------

    def _on_readable(self, port: Port) -> None:
        frames = port.receive(BURST)
        state = self.runtime.state
        if state is None:
            self.counters.no_pipeline += len(frames)
            return
        process = self._process
        number = port.number
        # The common case inline (one output to a data port without a fault): this loop
        # runs once per frame, so every call saved here counts. Anything else -> _emit.
        cpu_port = self.runtime.cpu_port
        ports = self.ports
        special = self.faults or self._queues
        for frame in frames:
            try:
                outputs = process(frame, number, state)
            except Exception:
                self._pipeline_error(frame, number)
                continue
            if len(outputs) == 1 and not special:
                out = outputs[0]
                egress = ports.get(out.port)
                if egress is not None and out.port != cpu_port:
                    egress.transmit(out.frame)
                    continue
            if outputs:
                self._emit(outputs)
        self._flush()

    def _flush(self) -> None:
        for port in self._port_list:
            if port._tx_pending:
                port.flush()

    def _pipeline_error(self, frame: bytes, ingress: int) -> None:
        self.counters.pipeline_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 1.0:
            self._last_error_log = now
            log.exception("pipeline failed on a %d-byte frame from port %d", len(frame), ingress)

    def packet_out(self, payload: bytes, metadata: Mapping[str, int]) -> None:
        """A P4Runtime PacketOut: into the pipeline as a frame from the CPU port."""
        state = self.runtime.state
        if state is None:
            raise invalid("no forwarding pipeline is committed")
        self.counters.packet_outs += 1
        try:
            if self._process_packet_out is not None:
                outputs = self._process_packet_out(payload, metadata, state)
            else:
                header = encode_controller_header(metadata, self.runtime.index.packet_out)
                outputs = self._process(header + payload, self.runtime.cpu_port, state)
        except ValueError as exc:  # the pipeline's verdict on bad metadata
            raise invalid(f"packet-out refused: {exc}") from None
        except Exception:
            self._pipeline_error(payload, self.runtime.cpu_port)
            return
        if outputs:
            self._emit(outputs)
            self._flush()

    # -- egress ----------------------------------------------------------------------------

    def _emit(self, outputs: list[Output]) -> None:
        cpu_port = self.runtime.cpu_port
        ports = self.ports
        faults = self.faults
        queues = self._queues
        for out in outputs:
            number = out.port
            if number == cpu_port:
                self._to_cpu(out)
                continue
            port = ports.get(number)
            if port is None:
                self.counters.no_port += 1
                continue
            if (faults or queues) and (number in faults or number in queues):
                self._send_faulty(port, out.frame)
                continue
            port.transmit(out.frame)

    def _to_cpu(self, out: Output) -> None:
        if out.metadata:
            metadata, frame = out.metadata, out.frame
        else:
            metadata, frame = decode_controller_header(out.frame, self.runtime.index.packet_in)
        if self.runtime.packet_in(frame, metadata):
            self.counters.packet_ins += 1
        else:
            self.counters.packet_ins_dropped += 1

    def _send_faulty(self, port: Port, frame: bytes) -> None:
        fault = self.faults.get(port.number)
        if fault is not None and fault.drop and self._random.random() < fault.drop:
            port.counters.fault_drops += 1
            return
        delay = fault.delay_ms / 1000.0 if fault is not None else 0.0
        q = self._queues.get(port.number)
        if q is None:
            if delay <= 0.0:
                port.transmit(frame)
                return
            q = self._queues[port.number] = _DelayQueue()
        loop = self._loop
        assert loop is not None
        due = max(loop.time() + delay, q.last_due)
        q.last_due = due
        q.frames.append((due, frame))
        if q.handle is None:
            q.handle = loop.call_at(due, self._release, port)

    def _release(self, port: Port) -> None:
        q = self._queues[port.number]
        q.handle = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        frames = q.frames
        while frames and frames[0][0] <= now:
            port.transmit(frames.popleft()[1])
        port.flush()
        if frames:
            q.handle = loop.call_at(frames[0][0], self._release, port)
        else:
            del self._queues[port.number]

    # -- introspection ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        ports = {}
        for number, port in sorted(self.ports.items()):
            c = port.counters
            ports[str(number)] = {
                "iface": port.ifname,
                "rings": port.uses_rings,
                "rx": c.rx,
                "rx_kernel_drops": port.update_kernel_drops(),
                "rx_ring_holes": c.ring_holes,
                "rx_ring_stale": c.ring_stale,
                "rx_ring_resyncs": c.ring_resyncs,
                "tx": c.tx,
                "tx_errors": c.tx_errors,
                "fault_drops": c.fault_drops,
                "delayed": len(self._queues[number].frames) if number in self._queues else 0,
                "fault": self.faults[number].describe() if number in self.faults else None,
            }
        c = self.counters
        state = self.runtime.state
        return {
            "ports": ports,
            "no_pipeline": c.no_pipeline,
            "pipeline_errors": c.pipeline_errors,
            "no_port": c.no_port,
            "packet_ins": c.packet_ins,
            "packet_ins_dropped": c.packet_ins_dropped,
            "packet_outs": c.packet_outs,
            "state_errors": state.errors if state is not None else 0,
        }
