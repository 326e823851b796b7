"""The contract between the lab switch's pipeline and its runtime.

``netmigrate.switch.pipeline`` is the behavioural twin of ``p4/netmigrate.p4``: a pure function
of a frame, its ingress port and a :class:`PipelineState`. The runtime
(``netmigrate.switch.state``) holds the entities that P4Runtime writes (tables, registers,
counters, clone sessions, digests) and implements :class:`PipelineState` for it. Every name
used here is the fully qualified name of the P4Info object (``NetMigrateIngress.keyspace``,
``hdr.ipv4.dstAddr``), so the P4Info stays the single source of truth for both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol

_NO_METADATA: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ActionCall:
    """The result of a table lookup: the action to run and its parameters."""

    action: str
    params: Mapping[str, int] = field(default_factory=dict)
    hit: bool = False


class Output(NamedTuple):
    """A frame leaving the pipeline. ``port == state.cpu_port`` means a packet-in.

    A NamedTuple rather than a frozen dataclass: one is made per packet, and the dataclass's
    construction cost was 12% of the pipeline's time per packet.
    """

    port: int
    frame: bytes
    #: ``packet_in`` controller metadata (name -> value), for frames sent to the CPU port.
    metadata: Mapping[str, int] = _NO_METADATA


class PipelineState(Protocol):
    #: The port number of the CPU (P4Runtime packet-in / packet-out).
    cpu_port: int

    def table_lookup(self, table: str, key: Mapping[str, int]) -> ActionCall:
        """Match ``key`` (match field name -> value) against ``table``.

        Returns the matching entry's action with ``hit=True``, else the table's current
        default action with ``hit=False``. Exact, LPM and ternary semantics follow the
        P4Info match types; the longest prefix wins for LPM.
        """
        ...

    def register_read(self, register: str, index: int) -> int: ...

    def register_write(self, register: str, index: int, value: int) -> None: ...

    def counter_add(self, counter: str, index: int, nbytes: int) -> None:
        """Count one packet of ``nbytes`` bytes at ``index`` of an indirect counter."""
        ...

    def clone_session(self, session_id: int) -> list[tuple[int, int]]:
        """The (egress_port, instance) replicas of a clone session; [] when not configured."""
        ...

    def digest(self, name: str, fields: Mapping[str, int]) -> None:
        """Queue one digest message (P4Info digest name, struct field name -> value)."""
        ...
