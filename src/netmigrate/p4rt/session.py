"""One P4Runtime session on top of finsy: channel, stream, arbitration, requests.

:class:`P4RTSession` is what every helper of :mod:`netmigrate.p4rt` works through. It
connects (plain or TLS), checks the server answers (Capabilities), opens the StreamChannel
and arbitrates for (device id, role) with an election id, then keeps reading the stream in
the background: arbitration changes, packet-ins and digest lists go to whoever subscribed.
The same code drives the lab switch (device id 1 by default) and BMv2's
``simple_switch_grpc`` (device id 0): pass ``device_id``.

::

    async with P4RTSession("127.0.0.1:9559", device_id=1, election_id=10) as s:
        await s.write([...])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from finsy import pbutil
from finsy.grpcutil import GRPCCredentialsTLS, GRPCStatusCode
from finsy.p4client import P4Client, P4ClientError
from finsy.p4schema import P4RuntimeVersion, P4Schema
from finsy.proto import U128, p4i, p4r

from netmigrate.p4rt.errors import (
    NoPipelineError,
    NotPrimaryError,
    P4RuntimeError,
    PipelineMismatchError,
    SwitchUnreachableError,
    UpdateError,
    WriteError,
)

log = logging.getLogger(__name__)

ResponseType = p4r.GetForwardingPipelineConfigRequest.ResponseType
ConfigAction = p4r.SetForwardingPipelineConfigRequest.Action
Atomicity = p4r.WriteRequest.Atomicity

#: Packet-ins / digest lists queued for one slow subscriber before older ones are dropped.
SUBSCRIBER_QUEUE = 65536


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Client side of TLS: the CA that signed the switch's certificate, and for mutual TLS
    our own certificate and key. ``server_name`` overrides the name checked in the
    switch's certificate (e.g. when connecting to 127.0.0.1)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""

    def credentials(self) -> GRPCCredentialsTLS:
        return GRPCCredentialsTLS(
            cacert=self.ca,
            cert=self.cert,
            private_key=self.key,
            target_name_override=self.server_name,
        )


@dataclass(frozen=True, slots=True)
class PacketIn:
    payload: bytes
    metadata: Mapping[str, int]


_CLOSED = object()


def code_name(code: int) -> str:
    try:
        return GRPCStatusCode(code).name
    except ValueError:
        return str(code)


def load_p4info(path: Path) -> p4i.P4Info:
    return pbutil.from_text(path.read_text("utf-8"), p4i.P4Info)


def convert_error(exc: P4ClientError, operation: str, address: str = "") -> P4RuntimeError:
    """A finsy P4ClientError as the matching :class:`P4RuntimeError` subclass."""
    code = exc.code.name
    details = tuple(
        UpdateError(i, err.canonical_code.name, err.message)
        for i, err in sorted(exc.details.items())
    )
    message = exc.message
    cls: type[P4RuntimeError] = P4RuntimeError
    if exc.code in (GRPCStatusCode.UNAVAILABLE, GRPCStatusCode.DEADLINE_EXCEEDED):
        cls = SwitchUnreachableError
        message = f"no P4Runtime server answers at {address or '?'}: {message}"
    elif exc.code == GRPCStatusCode.PERMISSION_DENIED:
        cls = NotPrimaryError
    elif exc.code == GRPCStatusCode.FAILED_PRECONDITION and operation != "StreamChannel":
        cls = NoPipelineError
    elif operation == "SetForwardingPipelineConfig" and exc.code == GRPCStatusCode.INVALID_ARGUMENT:
        cls = PipelineMismatchError
    elif operation == "Write" and details:
        cls = WriteError
    return cls(message, code=code, operation=operation, details=details)


class P4RTSession:
    def __init__(
        self,
        address: str,
        *,
        device_id: int = 1,
        election_id: int = 1,
        role: str = "",
        p4info: Path | p4i.P4Info | None = None,
        tls: TlsOptions | None = None,
        timeout: float = 10.0,
    ) -> None:
        if election_id < 0:
            raise ValueError("election_id must not be negative")
        self.address = address
        self.device_id = device_id
        self.election_id = election_id
        self.role = role
        self.timeout = timeout
        self._tls = tls
        if isinstance(p4info, Path):
            p4info = load_p4info(p4info)
        self._schema: P4Schema | None = P4Schema(p4info) if p4info is not None else None
        self._client: P4Client | None = None
        # finsy does not serialise writes on the stream, and two overlapping writes on one
        # gRPC stream fail with INTERNAL (seen with a packet-out racing a digest ack on BMv2).
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self.is_primary = False
        #: The highest election id the switch reported for (device, role); None if never set.
        self.primary_election_id: int | None = None
        self.api_version = ""
        self._packet_queues: list[asyncio.Queue] = []
        self._digest_queues: dict[int, asyncio.Queue] = {}
        self._arbitration: asyncio.Queue[p4r.MasterArbitrationUpdate] = asyncio.Queue()
        self.stream_errors: deque[p4r.StreamError] = deque(maxlen=1000)
        self.stream_error_count = 0
        self._closed_reason: P4RuntimeError | None = None
        self._packet_out_metadata: dict[tuple, list[p4r.PacketMetadata]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> P4RTSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, *, require_primary: bool = True, take_over: bool = True) -> None:
        """Connect and arbitrate.

        ``require_primary``: raise :class:`NotPrimaryError` unless we become primary.
        ``take_over``: when nobody is primary but the switch remembers a higher election id
        (its previous primary went away), claim that id, as P4Runtime allows.
        """
        tls = self._tls
        if tls is not None and not tls.server_name and self.address.startswith("unix:"):
            # gRPC checks a unix socket's path as the server's name: no certificate names a
            # path, a local server's names localhost.
            tls = replace(tls, server_name="localhost")
        creds = tls.credentials() if tls is not None else None
        self._client = P4Client(self.address, creds, wait_for_ready=False)
        await self._client.open(complete_request=self._complete_request)
        try:
            await self._capabilities()
            await self._arbitrate(require_primary, take_over)
            self._reader = asyncio.create_task(self._read_stream(), name="p4rt-stream")
            if self._schema is None:
                # Adopt the switch's P4Info when the caller brought none.
                config = await self.get_pipeline(ResponseType.P4INFO_AND_COOKIE)
                if config is not None and config.HasField("p4info"):
                    self.set_schema(config.p4info)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.is_primary = False
        for q in [*self._packet_queues, *self._digest_queues.values()]:
            q.put_nowait(_CLOSED)

    @property
    def client(self) -> P4Client:
        if self._client is None:
            raise P4RuntimeError("the session is not open", code="FAILED_PRECONDITION")
        return self._client

    @property
    def schema(self) -> P4Schema:
        if self._schema is None:
            raise NoPipelineError(
                "no P4Info: pass p4info= or install a pipeline first",
                code="FAILED_PRECONDITION",
            )
        return self._schema

    @property
    def has_schema(self) -> bool:
        return self._schema is not None

    def set_schema(self, p4info: p4i.P4Info) -> None:
        self._packet_out_metadata.clear()
        self._schema = P4Schema(p4info)
        self._schema.set_p4runtime_version(P4RuntimeVersion.parse(self.api_version or "1.3.0"))

    def _complete_request(self, msg: Any) -> None:
        if isinstance(msg, p4r.ReadRequest):
            msg.role = self.role
        elif isinstance(msg, (p4r.WriteRequest, p4r.SetForwardingPipelineConfigRequest)):
            msg.role = self.role
            msg.election_id.CopyFrom(U128.encode(self.election_id))

    async def _request(self, msg: Any, operation: str) -> Any:
        try:
            return await self.client.request(msg)
        except P4ClientError as exc:
            raise convert_error(exc, operation, self.address) from None

    async def _capabilities(self) -> None:
        try:
            reply = await self.client.request(p4r.CapabilitiesRequest())
            self.api_version = reply.p4runtime_api_version
        except P4ClientError as exc:
            if exc.code != GRPCStatusCode.UNIMPLEMENTED:
                raise convert_error(exc, "Capabilities", self.address) from None
            self.api_version = "1.0.0"
        if self._schema is not None:
            self._schema.set_p4runtime_version(P4RuntimeVersion.parse(self.api_version))

    # -- arbitration -----------------------------------------------------------------------

    def _arbitration_request(self, election_id: int) -> p4r.StreamMessageRequest:
        upd = p4r.MasterArbitrationUpdate(
            device_id=self.device_id, election_id=U128.encode(election_id)
        )
        if self.role:
            upd.role.name = self.role
        return p4r.StreamMessageRequest(arbitration=upd)

    async def _receive_arbitration(self) -> p4r.MasterArbitrationUpdate:
        while True:
            try:
                msg = await self.client.receive()
            except P4ClientError as exc:
                if exc.code == GRPCStatusCode.INVALID_ARGUMENT:
                    raise NotPrimaryError(
                        f"election id {self.election_id} is refused: {exc.message}",
                        code=exc.code.name,
                        operation="StreamChannel",
                    ) from None
                raise convert_error(exc, "StreamChannel", self.address) from None
            except RuntimeError as exc:  # finsy: EOF on the stream
                raise P4RuntimeError(str(exc), operation="StreamChannel") from None
            if msg.WhichOneof("update") == "arbitration":
                return msg.arbitration
            self._dispatch(msg)

    async def _arbitrate(self, require_primary: bool, take_over: bool) -> None:
        eid = self.election_id
        upd = None
        for _ in range(3):
            await self._send(self._arbitration_request(eid))
            try:
                upd = await asyncio.wait_for(self._receive_arbitration(), self.timeout)
            except TimeoutError:
                raise SwitchUnreachableError(
                    f"{self.address} did not answer the arbitration in {self.timeout:g} s",
                    code="DEADLINE_EXCEEDED",
                    operation="StreamChannel",
                ) from None
            self._note_arbitration(upd)
            highest = self.primary_election_id
            if (
                upd.status.code == grpc.StatusCode.NOT_FOUND.value[0]
                and take_over
                and highest is not None
                and highest > eid
            ):
                log.info("no primary on %s; claiming the last primary's election id", self.address)
                eid = highest
                continue
            break
        self.election_id = eid
        if require_primary and not self.is_primary:
            await self.close()
            raise NotPrimaryError(
                f"device {self.device_id} role {self.role!r}: another controller is primary "
                f"(election id {self.primary_election_id}); ours is {eid}",
                code="ALREADY_EXISTS",
                operation="StreamChannel",
            )

    def _note_arbitration(self, upd: p4r.MasterArbitrationUpdate) -> None:
        if upd.HasField("election_id"):
            self.primary_election_id = U128.decode(upd.election_id)
        was = self.is_primary
        self.is_primary = upd.status.code == 0
        if was and not self.is_primary:
            log.warning("%s: this controller is no longer the primary", self.address)

    # -- the stream ------------------------------------------------------------------------

    async def _send(self, msg: p4r.StreamMessageRequest) -> None:
        try:
            async with self._send_lock:
                await self.client.send(msg)
        except P4ClientError as exc:
            raise convert_error(exc, "StreamChannel", self.address) from None

    async def _read_stream(self) -> None:
        try:
            while True:
                msg = await self.client.receive()
                self._dispatch(msg)
        except asyncio.CancelledError:
            raise
        except P4ClientError as exc:
            self._closed_reason = convert_error(exc, "StreamChannel", self.address)
        except Exception as exc:  # EOF (finsy raises RuntimeError) or a broken channel
            self._closed_reason = P4RuntimeError(str(exc), operation="StreamChannel")
        self.is_primary = False
        log.warning("%s: stream closed: %s", self.address, self._closed_reason)
        for q in [*self._packet_queues, *self._digest_queues.values()]:
            q.put_nowait(_CLOSED)

    def _dispatch(self, msg: p4r.StreamMessageResponse) -> None:
        kind = msg.WhichOneof("update")
        if kind == "packet":
            self._on_packet(msg.packet)
        elif kind == "digest":
            q = self._digest_queues.get(msg.digest.digest_id)
            if q is not None and q.qsize() < SUBSCRIBER_QUEUE:
                q.put_nowait(msg.digest)
        elif kind == "arbitration":
            self._note_arbitration(msg.arbitration)
        elif kind == "error":
            self.stream_errors.append(msg.error)
            self.stream_error_count += 1
            log.warning(
                "%s: stream error %s: %s",
                self.address,
                code_name(msg.error.canonical_code),
                msg.error.message,
            )

    def _on_packet(self, packet: p4r.PacketIn) -> None:
        if not self._packet_queues:
            return
        metadata: dict[str, int] = {}
        if self._schema is not None:
            cpm = self._schema.controller_packet_metadata.get("packet_in")
            if cpm is not None:
                for md in packet.metadata:
                    field = cpm.metadata.get(md.metadata_id)
                    if field is not None:
                        metadata[field.name] = int.from_bytes(md.value, "big")
        pin = PacketIn(packet.payload, metadata)
        for q in self._packet_queues:
            if q.qsize() < SUBSCRIBER_QUEUE:
                q.put_nowait(pin)

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise self._closed_reason
        if self._client is None:
            raise P4RuntimeError("the session is not open", code="FAILED_PRECONDITION")

    @contextlib.asynccontextmanager
    async def packet_ins(self) -> AsyncIterator[asyncio.Queue]:
        """A queue of :class:`PacketIn` for as long as the block runs.

        The queue yields a closing sentinel when the stream ends; use :meth:`next_packet`.
        """
        q: asyncio.Queue = asyncio.Queue()
        self._packet_queues.append(q)
        try:
            yield q
        finally:
            self._packet_queues.remove(q)

    async def next_packet(self, q: asyncio.Queue, timeout: float) -> PacketIn | None:
        """The next packet-in of ``q``; None after ``timeout``; raises if the stream ended."""
        try:
            item = await asyncio.wait_for(q.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            raise self._closed_reason or P4RuntimeError("the stream closed")
        return item

    def poll_packet(self, q: asyncio.Queue) -> PacketIn | None:
        """The next packet-in of ``q`` if one is queued, else None."""
        try:
            item = q.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is _CLOSED:
            raise self._closed_reason or P4RuntimeError("the stream closed")
        return item

    async def packet_out(self, payload: bytes, metadata: Mapping[str, int]) -> None:
        self._check_open()
        # Bulk users (the slot map) send the same metadata thousands of times: encode once.
        key = tuple(sorted(metadata.items()))
        encoded = self._packet_out_metadata.get(key)
        if encoded is None:
            cpm = self.schema.controller_packet_metadata["packet_out"]
            encoded = self._packet_out_metadata[key] = cpm.encode(dict(metadata))
        await self._send(
            p4r.StreamMessageRequest(packet=p4r.PacketOut(payload=payload, metadata=encoded))
        )

    def subscribe_digests(self, digest_id: int) -> asyncio.Queue:
        if digest_id in self._digest_queues:
            raise ValueError(f"digest {digest_id} already has a subscriber")
        q: asyncio.Queue = asyncio.Queue()
        self._digest_queues[digest_id] = q
        return q

    def unsubscribe_digests(self, digest_id: int) -> None:
        self._digest_queues.pop(digest_id, None)

    async def next_digest_list(self, q: asyncio.Queue) -> p4r.DigestList:
        item = await q.get()
        if item is _CLOSED:
            raise self._closed_reason or P4RuntimeError("the stream closed")
        return item

    async def ack_digest(self, digest_id: int, list_id: int) -> None:
        await self._send(
            p4r.StreamMessageRequest(
                digest_ack=p4r.DigestListAck(digest_id=digest_id, list_id=list_id)
            )
        )

    # -- unary RPCs ------------------------------------------------------------------------

    async def get_pipeline(
        self, response_type: int = ResponseType.COOKIE_ONLY
    ) -> p4r.ForwardingPipelineConfig | None:
        """The switch's pipeline config, or None when it has none."""
        try:
            reply = await self._request(
                p4r.GetForwardingPipelineConfigRequest(
                    device_id=self.device_id, response_type=response_type
                ),
                "GetForwardingPipelineConfig",
            )
        except NoPipelineError:  # BMv2 answers FAILED_PRECONDITION before the first config
            return None
        return reply.config if reply.HasField("config") else None

    async def set_pipeline(self, action: int, config: p4r.ForwardingPipelineConfig) -> None:
        await self._request(
            p4r.SetForwardingPipelineConfigRequest(
                device_id=self.device_id, action=action, config=config
            ),
            "SetForwardingPipelineConfig",
        )

    async def write(
        self, updates: Sequence[p4r.Update], *, atomicity: int = Atomicity.CONTINUE_ON_ERROR
    ) -> None:
        if not updates:
            return
        await self._request(
            p4r.WriteRequest(device_id=self.device_id, updates=updates, atomicity=atomicity),
            "Write",
        )

    async def read(self, entities: Sequence[p4r.Entity]) -> list[p4r.Entity]:
        if not entities:
            return []
        out: list[p4r.Entity] = []
        try:
            async for reply in self.client.request_iter(
                p4r.ReadRequest(device_id=self.device_id, entities=entities)
            ):
                out.extend(reply.entities)
        except P4ClientError as exc:
            raise convert_error(exc, "Read", self.address) from None
        return out
