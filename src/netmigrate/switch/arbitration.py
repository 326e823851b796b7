"""Client arbitration (P4Runtime spec, "Client Arbitration and Controller Replication").

Pure bookkeeping, no gRPC: the server feeds it the ``MasterArbitrationUpdate`` of each stream
and delivers the notifications it returns. Per (device id, role) the primary is the live
controller whose election id equals the highest the switch has seen for that pair; a stream
without an election id is a backup for good. Rejected updates raise
:class:`~netmigrate.switch.errors.P4RTError` with the code that terminates the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from finsy.proto import U128, p4r, rpc_code, rpc_status

from netmigrate.switch.errors import P4RTError, not_found, permission_denied


@dataclass(eq=False)
class Controller:
    """One StreamChannel. ``outbox`` is whatever the server uses to send to it."""

    outbox: Any = None
    device_id: int | None = None
    role: str = ""
    #: None: the stream sent no election id (never primary).
    election_id: int | None = None
    peer: str = ""

    @property
    def arbitrated(self) -> bool:
        return self.device_id is not None


@dataclass(eq=False)
class _Group:
    controllers: list[Controller] = field(default_factory=list)
    highest: int | None = None
    primary: Controller | None = None
    role: p4r.Role | None = None


Notification = tuple[Controller, p4r.StreamMessageResponse]


def election_id_of(msg: p4r.MasterArbitrationUpdate | p4r.WriteRequest) -> int | None:
    if not msg.HasField("election_id"):
        return None
    return U128.decode(msg.election_id)


class Arbitration:
    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._groups: dict[tuple[int, str], _Group] = {}
        #: Every current primary (one per role), for packet-in and digest delivery.
        self.primaries: list[Controller] = []

    def arbitrate(self, ctrl: Controller, upd: p4r.MasterArbitrationUpdate) -> list[Notification]:
        role = upd.role.name if upd.HasField("role") else ""
        eid = election_id_of(upd)
        if not ctrl.arbitrated:
            if upd.device_id != self.device_id:
                raise not_found(f"unknown device id {upd.device_id} (this is {self.device_id})")
            group = self._groups.setdefault((upd.device_id, role), _Group())
            self._check_unique(group, ctrl, eid)
            ctrl.device_id = upd.device_id
            ctrl.role = role
            group.controllers.append(ctrl)
        else:
            if upd.device_id != ctrl.device_id:
                raise P4RTError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"device id {upd.device_id} differs from this stream's {ctrl.device_id}",
                )
            if role != ctrl.role:
                raise P4RTError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"role {role!r} differs from this stream's {ctrl.role!r}: open a new stream",
                )
            group = self._groups[(ctrl.device_id, role)]
            self._check_unique(group, ctrl, eid)
        ctrl.election_id = eid
        was_primary = group.primary is ctrl
        if eid is not None and (group.highest is None or eid >= group.highest):
            group.highest = eid
            group.primary = ctrl
            if upd.HasField("role"):
                group.role = upd.role
            self._refresh_primaries()
            return self._notify_all(ctrl.device_id, role, group)
        if was_primary:
            group.primary = None
            self._refresh_primaries()
            return self._notify_all(ctrl.device_id, role, group)
        return [(ctrl, self._advisory(ctrl.device_id, role, group, ctrl))]

    def remove(self, ctrl: Controller) -> list[Notification]:
        """The stream closed. Returns the advisories to send if it was the primary."""
        if not ctrl.arbitrated:
            return []
        key = (ctrl.device_id, ctrl.role)
        group = self._groups[key]
        group.controllers.remove(ctrl)
        if group.primary is not ctrl:
            return []
        group.primary = None
        self._refresh_primaries()
        return self._notify_all(key[0], key[1], group)

    def check_primary(self, device_id: int, role: str, election_id: int | None) -> None:
        """Raise unless (device, role, election id) names the current primary."""
        group = self._groups.get((device_id, role))
        if group is None and role:
            raise not_found(f"role {role!r} is unknown on device {device_id}")
        primary = group.primary if group else None
        if primary is None:
            raise permission_denied("no primary controller: open a StreamChannel and arbitrate")
        if election_id != primary.election_id:
            raise permission_denied(
                f"not the primary: election id {election_id} is not the primary's"
            )

    def is_primary(self, ctrl: Controller) -> bool:
        if not ctrl.arbitrated:
            return False
        group = self._groups[(ctrl.device_id, ctrl.role)]
        return group.primary is ctrl

    @staticmethod
    def _check_unique(group: _Group, ctrl: Controller, eid: int | None) -> None:
        if eid is None:
            return
        for other in group.controllers:
            if other is not ctrl and other.election_id == eid:
                raise P4RTError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Election id {eid} already exists for another live controller",
                )

    def _refresh_primaries(self) -> None:
        self.primaries = [g.primary for g in self._groups.values() if g.primary is not None]

    def _notify_all(self, device_id: int, role: str, group: _Group) -> list[Notification]:
        # The new primary learns last, as the spec orders it.
        others = [c for c in group.controllers if c is not group.primary]
        out = [(c, self._advisory(device_id, role, group, c)) for c in others]
        if group.primary is not None:
            out.append((group.primary, self._advisory(device_id, role, group, group.primary)))
        return out

    @staticmethod
    def _advisory(
        device_id: int, role: str, group: _Group, to: Controller
    ) -> p4r.StreamMessageResponse:
        if group.primary is to:
            status = rpc_status.Status(code=rpc_code.OK)
        elif group.primary is not None:
            status = rpc_status.Status(
                code=rpc_code.ALREADY_EXISTS, message="a primary controller is connected"
            )
        else:
            status = rpc_status.Status(code=rpc_code.NOT_FOUND, message="there is no primary")
        upd = p4r.MasterArbitrationUpdate(device_id=device_id, status=status)
        if group.role is not None:
            upd.role.CopyFrom(group.role)
        elif role:
            upd.role.name = role
        if group.highest is not None:
            upd.election_id.CopyFrom(U128.encode(group.highest))
        return p4r.StreamMessageResponse(arbitration=upd)
