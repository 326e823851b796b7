"""The lab switch's P4Runtime service (grpc.aio, finsy's generated stubs).

Implements Capabilities, StreamChannel (arbitration, packet-out, packet-in, digest lists and
acks), Set/GetForwardingPipelineConfig, Write and Read, with the status codes and the error
details (``google.rpc.Status`` holding one ``p4.v1.Error`` per update) that the P4Runtime
specification prescribes. The forwarding state lives in :class:`SwitchRuntime`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import grpc
from finsy.proto import p4d, p4r, p4r_grpc, rpc_code, rpc_status
from google.protobuf import any_pb2

from netmigrate.switch.arbitration import Arbitration, Controller, election_id_of
from netmigrate.switch.bytestrings import decode_uint, encode_uint
from netmigrate.switch.digests import Message
from netmigrate.switch.entities import read_entity, write_update
from netmigrate.switch.errors import P4RTError, invalid, not_found
from netmigrate.switch.runtime import SwitchRuntime

log = logging.getLogger(__name__)

#: The P4Runtime version of the protobuf definitions this server is built on (finsy's).
P4RUNTIME_API_VERSION = "1.5.0"
#: Entities per ReadResponse message.
READ_CHUNK = 1000
#: Stream messages (packet-ins, digests) queued for one slow controller before new ones drop.
STREAM_QUEUE_LIMIT = 8192
ERROR_SPACE = "netmigrate-lab-v1model"

Atomicity = p4r.WriteRequest.Atomicity


@dataclass(slots=True)
class StreamStats:
    packet_ins: int = 0
    packet_ins_dropped: int = 0
    packet_outs: int = 0
    packet_outs_rejected: int = 0
    digest_lists: int = 0


def _status_bytes(code: grpc.StatusCode, message: str, errors: Iterable[p4r.Error]) -> bytes:
    status = rpc_status.Status(code=code.value[0], message=message)
    for err in errors:
        packed = any_pb2.Any()
        packed.Pack(err)
        status.details.append(packed)
    return status.SerializeToString()


def _error(exc: P4RTError | None) -> p4r.Error:
    if exc is None:
        return p4r.Error(canonical_code=rpc_code.OK)
    return p4r.Error(canonical_code=exc.code.value[0], message=exc.message, space=ERROR_SPACE)


def _write(state, update: p4r.Update):
    try:
        return write_update(state, update)
    except P4RTError:
        raise
    except Exception as exc:  # a bug; the update is refused, the server keeps serving
        log.exception("write of %s failed", update.entity.WhichOneof("entity"))
        raise P4RTError(grpc.StatusCode.INTERNAL, "internal error") from exc


class P4RuntimeService(p4r_grpc.P4RuntimeServicer):
    def __init__(self, runtime: SwitchRuntime) -> None:
        self.runtime = runtime
        self.arbitration = Arbitration(runtime.device_id)
        self.stats = StreamStats()
        runtime.packet_in_sink = self.send_packet_in
        runtime.digest_sink = self.send_digest_list
        index = runtime.index
        self._packet_in_meta = index.packet_in
        self._packet_out_meta = {m.id: m for m in index.packet_out}

    # -- helpers ---------------------------------------------------------------------------

    def _check_device(self, device_id: int) -> None:
        if device_id != self.runtime.device_id:
            raise not_found(f"unknown device id {device_id} (this is {self.runtime.device_id})")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: P4RTError) -> None:
        await context.abort(exc.code, exc.message)

    # -- Capabilities ----------------------------------------------------------------------

    async def Capabilities(self, request, context):
        if request.device_id:
            try:
                self._check_device(request.device_id)
            except P4RTError as exc:
                await self._abort(context, exc)
        return p4r.CapabilitiesResponse(p4runtime_api_version=P4RUNTIME_API_VERSION)

    # -- pipeline config -------------------------------------------------------------------

    async def SetForwardingPipelineConfig(self, request, context):
        try:
            self._check_device(request.device_id)
            self.arbitration.check_primary(request.device_id, request.role, election_id_of(request))
            config = request.config if request.HasField("config") else None
            self.runtime.set_pipeline(request.action, config)
        except P4RTError as exc:
            log.info("SetForwardingPipelineConfig refused: %s", exc.message)
            await self._abort(context, exc)
        return p4r.SetForwardingPipelineConfigResponse()

    async def GetForwardingPipelineConfig(self, request, context):
        try:
            self._check_device(request.device_id)
            config = self.runtime.get_pipeline(request.response_type)
        except P4RTError as exc:
            await self._abort(context, exc)
        if config is None:
            return p4r.GetForwardingPipelineConfigResponse()
        return p4r.GetForwardingPipelineConfigResponse(config=config)

    # -- Write -----------------------------------------------------------------------------

    async def Write(self, request, context):
        try:
            self._check_device(request.device_id)
            self.arbitration.check_primary(request.device_id, request.role, election_id_of(request))
            state = self.runtime.require_state()
            if request.atomicity not in (
                Atomicity.CONTINUE_ON_ERROR,
                Atomicity.ROLLBACK_ON_ERROR,
                Atomicity.DATAPLANE_ATOMIC,
            ):
                raise invalid(f"unknown atomicity {request.atomicity}")
        except P4RTError as exc:
            await self._abort(context, exc)
        # No await from here to the end of the batch: the data plane (same loop) sees the
        # state before or after, which makes every mode DATAPLANE_ATOMIC-safe.
        updates = request.updates
        errors: list[P4RTError | None] = [None] * len(updates)
        failed = 0
        if request.atomicity == Atomicity.CONTINUE_ON_ERROR:
            for i, update in enumerate(updates):
                try:
                    _write(state, update)
                except P4RTError as exc:
                    errors[i] = exc
                    failed += 1
        else:
            undo = []
            for i, update in enumerate(updates):
                try:
                    undo.append(_write(state, update))
                except P4RTError as exc:
                    errors[i] = exc
                    failed = 1
                    for fn in reversed(undo):
                        fn()
                    aborted = grpc.StatusCode.ABORTED
                    for j in range(len(updates)):
                        if j != i:
                            reason = "rolled back" if j < i else "not applied"
                            errors[j] = P4RTError(aborted, f"{reason}: update {i} failed")
                    break
        if failed:
            first = next(i for i, e in enumerate(errors) if e and e.code.name != "ABORTED")
            exc = errors[first]
            assert exc is not None
            message = (
                f"Write failure: {failed} of {len(updates)} updates failed; "
                f"update {first}: {exc.code.name}: {exc.message}"
            )
            log.info("%s", message)
            await context.abort(
                grpc.StatusCode.UNKNOWN,
                message,
                trailing_metadata=(
                    (
                        "grpc-status-details-bin",
                        _status_bytes(
                            grpc.StatusCode.UNKNOWN, message, (_error(e) for e in errors)
                        ),
                    ),
                ),
            )
        return p4r.WriteResponse()

    # -- Read ------------------------------------------------------------------------------

    async def Read(self, request, context) -> AsyncIterator[p4r.ReadResponse]:
        try:
            self._check_device(request.device_id)
            state = self.runtime.require_state()
        except P4RTError as exc:
            await self._abort(context, exc)
            return
        # Materialise everything before the first await so the answer is one snapshot.
        found: list[p4r.Entity] = []
        errors: list[P4RTError | None] = []
        for entity in request.entities:
            try:
                found.extend(read_entity(state, entity))
                errors.append(None)
            except P4RTError as exc:
                errors.append(exc)
            except Exception:
                log.exception("read of %s failed", entity.WhichOneof("entity"))
                errors.append(P4RTError(grpc.StatusCode.INTERNAL, "internal error"))
        for start in range(0, len(found), READ_CHUNK):
            yield p4r.ReadResponse(entities=found[start : start + READ_CHUNK])
        bad = [e for e in errors if e is not None]
        if bad:
            message = f"Read failure: {len(bad)} of {len(errors)} requests failed: {bad[0].message}"
            await context.abort(
                grpc.StatusCode.UNKNOWN,
                message,
                trailing_metadata=(
                    (
                        "grpc-status-details-bin",
                        _status_bytes(
                            grpc.StatusCode.UNKNOWN, message, (_error(e) for e in errors)
                        ),
                    ),
                ),
            )

    # -- StreamChannel ---------------------------------------------------------------------

    async def StreamChannel(self, request_iterator, context):
        ctrl = Controller(outbox=asyncio.Queue(), peer=context.peer())
        writer = asyncio.create_task(self._stream_writer(ctrl, context))
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("update")
                if kind == "arbitration":
                    try:
                        notes = self.arbitration.arbitrate(ctrl, request.arbitration)
                    except P4RTError as exc:
                        log.info("arbitration from %s refused: %s", ctrl.peer, exc.message)
                        await self._abort(context, exc)
                    self._deliver(notes)
                elif kind == "packet":
                    self._packet_out(ctrl, request.packet)
                elif kind == "digest_ack":
                    self._digest_ack(ctrl, request.digest_ack)
                else:
                    self._stream_error(
                        ctrl,
                        p4r.StreamError(
                            canonical_code=rpc_code.UNIMPLEMENTED,
                            message=f"stream message {kind!r} is not supported",
                            other=p4r.StreamOtherError(),
                        ),
                    )
        finally:
            self._deliver(self.arbitration.remove(ctrl))
            writer.cancel()

    async def _stream_writer(self, ctrl: Controller, context) -> None:
        queue: asyncio.Queue = ctrl.outbox
        while True:
            msg = await queue.get()
            await context.write(msg)

    @staticmethod
    def _deliver(notes) -> None:
        for ctrl, msg in notes:
            ctrl.outbox.put_nowait(msg)

    def _stream_error(self, ctrl: Controller, err: p4r.StreamError) -> None:
        ctrl.outbox.put_nowait(p4r.StreamMessageResponse(error=err))

    def _packet_out(self, ctrl: Controller, packet: p4r.PacketOut) -> None:
        def reject(code: int, message: str) -> None:
            self.stats.packet_outs_rejected += 1
            self._stream_error(
                ctrl,
                p4r.StreamError(
                    canonical_code=code,
                    message=message,
                    space=ERROR_SPACE,
                    packet_out=p4r.PacketOutError(packet_out=packet),
                ),
            )

        if not self.arbitration.is_primary(ctrl):
            reject(rpc_code.PERMISSION_DENIED, "only the primary controller may send packets")
            return
        try:
            metadata = self._decode_packet_out_metadata(packet.metadata)
            self.runtime.packet_out(packet.payload, metadata)
        except P4RTError as exc:
            reject(exc.code.value[0], exc.message)
            return
        self.stats.packet_outs += 1

    def _decode_packet_out_metadata(self, metadata) -> dict[str, int]:
        # A field the client leaves out is 0 (p4runtime-shell and finsy send every field).
        out = {m.name: 0 for m in self._packet_out_meta.values()}
        seen = set()
        for md in metadata:
            info = self._packet_out_meta.get(md.metadata_id)
            if info is None:
                raise invalid(f"unknown packet_out metadata id {md.metadata_id}")
            if md.metadata_id in seen:
                raise invalid(f"packet_out metadata {info.name} given twice")
            seen.add(md.metadata_id)
            out[info.name] = decode_uint(md.value, info.bitwidth, f"packet_out {info.name}")
        return out

    def _digest_ack(self, ctrl: Controller, ack: p4r.DigestListAck) -> None:
        state = self.runtime.state
        ok = (
            self.arbitration.is_primary(ctrl)
            and state is not None
            and state.digests is not None
            and state.digests.ack(ack.digest_id, ack.list_id)
        )
        if not ok:
            self._stream_error(
                ctrl,
                p4r.StreamError(
                    canonical_code=rpc_code.INVALID_ARGUMENT,
                    message=f"no enabled digest {ack.digest_id} to acknowledge",
                    digest_list_ack=p4r.DigestListAckError(digest_list_ack=ack),
                ),
            )

    # -- toward the controllers (called by the data plane) ---------------------------------

    def send_packet_in(self, frame: bytes, metadata: Mapping[str, int]) -> bool:
        primaries = self.arbitration.primaries
        if not primaries:
            self.stats.packet_ins_dropped += 1
            return False
        msg = p4r.StreamMessageResponse(
            packet=p4r.PacketIn(
                payload=frame,
                metadata=[
                    p4r.PacketMetadata(metadata_id=m.id, value=encode_uint(metadata.get(m.name, 0)))
                    for m in self._packet_in_meta
                ],
            )
        )
        sent = False
        for ctrl in primaries:
            queue: asyncio.Queue = ctrl.outbox
            if queue.qsize() >= STREAM_QUEUE_LIMIT:
                self.stats.packet_ins_dropped += 1
                continue
            queue.put_nowait(msg)
            sent = True
        if sent:
            self.stats.packet_ins += 1
        return sent

    def send_digest_list(self, digest_id: int, list_id: int, messages: list[Message]) -> bool:
        primaries = self.arbitration.primaries
        if not primaries:
            return False
        info = self.runtime.index.digests[digest_id]
        data = []
        for message in messages:
            members = [p4d.P4Data(bitstring=encode_uint(v)) for v in message]
            if len(info.members) == 1 and info.members[0][0] == "":
                data.append(members[0])
            else:
                data.append(p4d.P4Data(struct=p4d.P4StructLike(members=members)))
        msg = p4r.StreamMessageResponse(
            digest=p4r.DigestList(
                digest_id=digest_id,
                list_id=list_id,
                data=data,
                timestamp=time.time_ns(),
            )
        )
        for ctrl in primaries:
            ctrl.outbox.put_nowait(msg)
        self.stats.digest_lists += 1
        return True
