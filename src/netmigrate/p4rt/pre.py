"""Ensure clone sessions (the packet replication engine) present or absent.

The NetMigrate pipeline uses clone session ``s`` for server ``s`` (one replica: the server's
port) to double-read. Replicas are encoded the way the switch's P4Runtime version expects
(finsy: the ``port`` bytes field from 1.5, the older ``egress_port`` before), and compared by
value, not by encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import finsy as fy
from finsy.proto import p4r

from netmigrate.p4rt.errors import P4RuntimeError
from netmigrate.p4rt.session import P4RTSession

Update = p4r.Update


@dataclass(frozen=True)
class CloneSessionSpec:
    session_id: int
    #: (port, instance) pairs; a bare port means instance 0.
    replicas: tuple[tuple[int, int], ...] = ()
    class_of_service: int = 0
    packet_length_bytes: int = 0

    @classmethod
    def to_port(cls, session_id: int, port: int) -> CloneSessionSpec:
        return cls(session_id, ((port, 0),))

    def encode(self, session: P4RTSession) -> p4r.CloneSessionEntry:
        if self.session_id <= 0:
            raise P4RuntimeError("clone session ids start at 1", code="INVALID_ARGUMENT")
        entry = fy.P4CloneSessionEntry(
            self.session_id,
            class_of_service=self.class_of_service,
            packet_length_bytes=self.packet_length_bytes,
            replicas=[(port, instance) for port, instance in self.replicas],
        )
        return entry.encode(session.schema).packet_replication_engine_entry.clone_session_entry


def _port(r: p4r.Replica) -> int:
    if r.WhichOneof("port_kind") == "port":
        return int.from_bytes(r.port, "big")
    return r.egress_port


def clone_value(cs: p4r.CloneSessionEntry) -> tuple:
    return (
        tuple(sorted((_port(r), r.instance) for r in cs.replicas)),
        cs.class_of_service,
        cs.packet_length_bytes,
    )


def describe_clone(cs: p4r.CloneSessionEntry) -> dict[str, Any]:
    return {
        "session_id": cs.session_id,
        "replicas": [[_port(r), r.instance] for r in cs.replicas],
        "class_of_service": cs.class_of_service,
        "packet_length_bytes": cs.packet_length_bytes,
    }


async def read_clone_sessions(session: P4RTSession) -> dict[int, p4r.CloneSessionEntry]:
    entities = await session.read(
        [
            p4r.Entity(
                packet_replication_engine_entry=p4r.PacketReplicationEngineEntry(
                    clone_session_entry=p4r.CloneSessionEntry()
                )
            )
        ]
    )
    out = {}
    for e in entities:
        cs = e.packet_replication_engine_entry.clone_session_entry
        out[cs.session_id] = cs
    return out


@dataclass(slots=True)
class CloneSessionsResult:
    changed: bool = False
    inserted: list[int] = field(default_factory=list)
    modified: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    before: list[dict[str, Any]] = field(default_factory=list)
    after: list[dict[str, Any]] = field(default_factory=list)


def _update(utype: int, cs: p4r.CloneSessionEntry) -> p4r.Update:
    return Update(
        type=utype,
        entity=p4r.Entity(
            packet_replication_engine_entry=p4r.PacketReplicationEngineEntry(clone_session_entry=cs)
        ),
    )


async def ensure_clone_sessions(
    session: P4RTSession,
    specs: Sequence[CloneSessionSpec],
    *,
    present: bool = True,
    check_mode: bool = False,
) -> CloneSessionsResult:
    wants = [s.encode(session) for s in specs]
    ids = [w.session_id for w in wants]
    if len(set(ids)) != len(ids):
        raise P4RuntimeError("a clone session id is given twice", code="INVALID_ARGUMENT")
    have = await read_clone_sessions(session)
    result = CloneSessionsResult()
    updates = []
    for want in wants:
        current = have.get(want.session_id)
        if present:
            if current is None:
                updates.append(_update(Update.INSERT, want))
                result.inserted.append(want.session_id)
                result.after.append(describe_clone(want))
            elif clone_value(current) != clone_value(want):
                updates.append(_update(Update.MODIFY, want))
                result.modified.append(want.session_id)
                result.before.append(describe_clone(current))
                result.after.append(describe_clone(want))
        elif current is not None:
            updates.append(
                _update(Update.DELETE, p4r.CloneSessionEntry(session_id=current.session_id))
            )
            result.deleted.append(current.session_id)
            result.before.append(describe_clone(current))
    result.changed = bool(updates)
    if updates and not check_mode:
        await session.write(updates)
    return result
