"""The contracts between the agent's data path and its migration sides.

The data path (``datapath``) serves client datagrams and hands the migration's datagrams to
the sides, in arrival order; the sides answer and send through the data path. Each depends on a
Protocol here, not on the other's module (as ``switch/interfaces.py`` does for the lab switch's
pipeline and runtime), so the data path imports no migration code and the sides no data path:

- :class:`TransitionReplies`: what the data path needs from the source side;
- :class:`IncomingSlots`: what the data path needs from the target side;
- :class:`DatagramOut`: what the source side needs from the data path;
- :class:`RequestPath`: what the target side needs from the data path.

``datapath.DataPath`` implements both of the last two; ``source.SourceSide`` and
``target.TargetSide`` implement the first two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from netmigrate.agent.commands import OpSpec
from netmigrate.agent.dedup import Address, DedupEntry, DedupWindow
from netmigrate.agent.generic import GenericRequest
from netmigrate.protocol.codec import HeaderFields


class TransitionReplies(Protocol):
    def on_transition_reply(
        self, fields: HeaderFields, body: Any, commands: list[bytes], callbacks: list[Any]
    ) -> None:
        """The target's answer to a SLOT_START / SLOT_COMPLETE this agent sent, in arrival
        order: Redis commands it appends to ``commands`` (with their ``callbacks``) run after
        every request that arrived before it."""
        ...


class IncomingSlots(Protocol):
    def on_transition(self, fields: HeaderFields, epoch: int, addr: Address) -> None:
        """A SLOT_START or SLOT_COMPLETE request (of the migration ``epoch``), in arrival
        order with client requests."""
        ...

    def handle(
        self,
        fields: HeaderFields,
        body: Any,
        spec: OpSpec,
        data: bytes,
        addr: Address,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """A client request for a slot that migrates in (the SlotTable admitted it as
        TARGET); its Redis commands go to ``commands`` to keep arrival order."""
        ...


class DatagramOut(Protocol):
    def send_to(self, datagram: bytes, addr: Address) -> None:
        """Send from the data socket (what goes through the switch like client traffic)."""
        ...


class RequestPath(DatagramOut, Protocol):
    #: The request-id window (the target installs the source's ids into it).
    dedup: DedupWindow

    def begin(self, fields: HeaderFields, addr: Address, data: bytes) -> DedupEntry | None:
        """Remember the request (``data``: its datagram, fingerprinted) as in flight, or answer
        BUSY (None) when Redis is away."""
        ...

    def queue(
        self,
        fields: HeaderFields,
        spec: OpSpec,
        entry: DedupEntry,
        command: bytes,
        commands: list[bytes],
        callbacks: list[Any],
        *,
        dirty: bytes | None = None,
        keys: tuple[bytes, ...] = (),
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        """Queue a begun request's command (a write with ``dirty`` also marks ``keys``;
        ``on_applied`` runs once Redis answered that it applied this very write)."""
        ...

    def queue_generic(
        self,
        fields: HeaderFields,
        request: GenericRequest,
        entry: DedupEntry,
        commands: list[bytes],
        callbacks: list[Any],
        *,
        dirty: bytes | None = None,
        on_applied: Callable[[tuple[bytes, ...]], None] | None = None,
    ) -> None:
        """Queue a begun CMD_READ / CMD_WRITE (a write with ``dirty`` marks the keys of its
        commands that succeeded; ``on_applied`` gets them once Redis answered)."""
        ...

    def fail(self, fields: HeaderFields, entry: DedupEntry, status: int, message: str) -> None:
        """Answer a begun request that was not applied, and forget it."""
        ...

    def refuse(self, fields: HeaderFields, addr: Address, status: int, message: str) -> None:
        """Answer a request with an error status without applying it."""
        ...

    def flush(self, commands: list[bytes], callbacks: list[Any]) -> None:
        """Send commands to Redis on the data connection, behind every request before them."""
        ...

    def replay(self, datagrams: Iterable[tuple[bytes, Address]]) -> None:
        """Handle held-back datagrams (in their order) as if they arrived now."""
        ...
