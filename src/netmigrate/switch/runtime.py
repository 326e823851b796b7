"""The switch's device: its one pipeline, the committed forwarding state, packet I/O hooks.

Both the P4Runtime server and the data plane hold the :class:`SwitchRuntime`. The data plane
reads :attr:`SwitchRuntime.state` for every frame; a pipeline commit replaces that object in
one assignment, so a frame sees either the old forwarding state or the new one. Everything
runs on one asyncio loop: no locks, and a Write batch applied without awaiting is atomic
with respect to the data plane.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from finsy.proto import p4i, p4r

from netmigrate.switch.digests import DigestEngine, Message
from netmigrate.switch.errors import P4RTError, invalid, unimplemented
from netmigrate.switch.p4info import P4InfoIndex, first_difference, load_p4info
from netmigrate.switch.state import DefaultActions, SwitchState

log = logging.getLogger(__name__)

Action = p4r.SetForwardingPipelineConfigRequest.Action

#: (frame, packet_in metadata by name) -> delivered to a controller?
PacketInSink = Callable[[bytes, Mapping[str, int]], bool]
#: (digest id, list id, messages) -> delivered to a controller?
DigestSink = Callable[[int, int, list[Message]], bool]
#: (payload, packet_out metadata by name) -> None; raises P4RTError for a bad packet.
PacketOutHandler = Callable[[bytes, Mapping[str, int]], None]


@dataclass(slots=True)
class PipelineConfig:
    p4info: p4i.P4Info
    device_config: bytes
    #: None: the client set no cookie (GetForwardingPipelineConfig leaves it unset then).
    cookie: int | None


class SwitchRuntime:
    def __init__(
        self,
        p4info_path: Path,
        *,
        device_id: int = 1,
        cpu_port: int = 255,
        initial_defaults: DefaultActions | None = None,
    ) -> None:
        self.device_id = device_id
        self.cpu_port = cpu_port
        self.p4info = load_p4info(p4info_path)
        self.index = P4InfoIndex(self.p4info)
        self.initial_defaults = initial_defaults
        self.config: PipelineConfig | None = None
        #: The committed forwarding state; None until a pipeline is committed (frames drop).
        self.state: SwitchState | None = None
        self.packet_in_sink: PacketInSink | None = None
        self.digest_sink: DigestSink | None = None
        self.packet_out_handler: PacketOutHandler | None = None
        # Validate the defaults now: a switch that cannot build its state must not start.
        SwitchState(self.index, cpu_port, None, initial_defaults)

    # -- pipeline config -------------------------------------------------------------------

    def verify(self, config: p4r.ForwardingPipelineConfig | None) -> None:
        if config is None or not config.HasField("p4info"):
            raise invalid("the request carries no ForwardingPipelineConfig with a P4Info")
        diff = first_difference(self.p4info, config.p4info)
        if diff is not None:
            raise invalid(f"P4Info does not describe this switch's pipeline: {diff}")

    def set_pipeline(self, action: int, config: p4r.ForwardingPipelineConfig | None) -> None:
        if action == Action.VERIFY:
            self.verify(config)
            return
        if action in (Action.VERIFY_AND_COMMIT, Action.RECONCILE_AND_COMMIT):
            self.verify(config)
            assert config is not None
            keep = action == Action.RECONCILE_AND_COMMIT and self.state is not None
            self.config = PipelineConfig(
                p4info=config.p4info,
                device_config=config.p4_device_config,
                cookie=config.cookie.cookie if config.HasField("cookie") else None,
            )
            if not keep:
                self.state = self._new_state()
            log.info(
                "pipeline %s (cookie %s)",
                "reconciled" if keep else "committed",
                self.config.cookie,
            )
            return
        if action in (Action.VERIFY_AND_SAVE, Action.COMMIT):
            raise unimplemented(
                f"{Action.Name(action)} is not supported: use VERIFY_AND_COMMIT or "
                "RECONCILE_AND_COMMIT"
            )
        raise invalid(f"unknown SetForwardingPipelineConfig action {action}")

    def get_pipeline(self, response_type: int) -> p4r.ForwardingPipelineConfig | None:
        cfg = self.config
        if cfg is None:
            return None
        rt = p4r.GetForwardingPipelineConfigRequest.ResponseType
        out = p4r.ForwardingPipelineConfig()
        if cfg.cookie is not None:
            out.cookie.cookie = cfg.cookie
        if response_type in (rt.ALL, rt.P4INFO_AND_COOKIE):
            out.p4info.CopyFrom(cfg.p4info)
        if response_type in (rt.ALL, rt.DEVICE_CONFIG_AND_COOKIE):
            out.p4_device_config = cfg.device_config
        if response_type not in (
            rt.ALL,
            rt.COOKIE_ONLY,
            rt.P4INFO_AND_COOKIE,
            rt.DEVICE_CONFIG_AND_COOKIE,
        ):
            raise invalid(f"unknown response type {response_type}")
        return out

    def require_state(self) -> SwitchState:
        if self.state is None:
            raise P4RTError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "No forwarding pipeline config set for this device",
            )
        return self.state

    def _new_state(self) -> SwitchState:
        engine = DigestEngine(self._schedule, self._deliver_digest)
        return SwitchState(self.index, self.cpu_port, engine, self.initial_defaults)

    @staticmethod
    def _schedule(delay: float, callback: Callable[[], None]) -> object:
        loop = asyncio.get_running_loop()
        if delay <= 0:
            return loop.call_soon(callback)
        return loop.call_later(delay, callback)

    def _deliver_digest(self, digest_id: int, list_id: int, messages: list[Message]) -> bool:
        sink = self.digest_sink
        return sink is not None and sink(digest_id, list_id, messages)

    # -- packet I/O ------------------------------------------------------------------------

    def packet_in(self, frame: bytes, metadata: Mapping[str, int]) -> bool:
        sink = self.packet_in_sink
        return sink is not None and sink(frame, metadata)

    def packet_out(self, payload: bytes, metadata: Mapping[str, int]) -> None:
        handler = self.packet_out_handler
        if handler is None:
            raise unimplemented("this switch has no data plane")
        handler(payload, metadata)
