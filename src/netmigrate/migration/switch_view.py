"""What the controller asks the switch: is it ready for a migration, and what its slot map says.

Everything goes through :mod:`netmigrate.p4rt`: table entries and clone sessions are read over
P4Runtime, the slot map through packet-out SLOT_READ / SLOT_SET (never RegisterEntry, which
BMv2 does not serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netmigrate.migration.model import KeyspaceRef, MigrationError, SwitchEndpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchFacts:
    #: The keyspace table entry's default owner (slot_map owner byte 0 means this server).
    default_owner: int
    #: The keyspace id the switch reports in its digests.
    switch_keyspace_id: int
    #: The keyspace's first cell in the slot_map register.
    slot_base: int = 0


#: Set on a session whose switch refused a RegisterEntry read (it is asked with packets then).
_NO_REGISTER_READ = "_netmigrate_no_register_read"
#: How long to keep retrying when another process holds the same election id.
SESSION_RETRY_SECONDS = 30.0

#: (event loop, address, device id, election id, role): one session per key and process.
_Key = tuple[int, str, int, int, str]


@dataclass
class _Shared:
    """A session to one switch with one election id, shared by the controller runs of this
    process: P4Runtime refuses a second live controller with the same id, so two runs at once
    (two migrations, or a reconcile beside a migration) use one session instead of excluding
    each other."""

    session: Any
    users: int = 0
    #: The runs' steps (a readiness check, a slot map read, reconcile's read-then-write) take
    #: turns on the session, as whole sessions did when each step opened its own.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


_SHARED: dict[_Key, _Shared] = {}
#: Opening, reopening and closing the session of one key happen one at a time.
_KEY_LOCKS: dict[_Key, asyncio.Lock] = {}


def _key(switch: SwitchEndpoint) -> _Key:
    loop = asyncio.get_running_loop()
    return (id(loop), switch.address, switch.device_id, switch.election_id, switch.role)


async def _open(switch: SwitchEndpoint) -> Any:
    """A primary P4RTSession; a session of another process with the same election id is
    waited for, up to :data:`SESSION_RETRY_SECONDS`."""
    from netmigrate.p4rt import NotPrimaryError, P4RTSession, P4RuntimeError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSION_RETRY_SECONDS
    delay = 0.05
    while True:
        session = P4RTSession(
            switch.address,
            device_id=switch.device_id,
            election_id=switch.election_id,
            role=switch.role,
            p4info=switch.p4info,
            tls=switch.tls,
        )
        try:
            await session.open()
            return session
        except NotPrimaryError as e:
            if loop.time() > deadline:
                raise MigrationError(f"switch {switch.address}: {e}", code=e.code) from None
        except P4RuntimeError as e:
            raise MigrationError(f"switch {switch.address}: {e}", code=e.code) from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


class SwitchLink:
    """The switch session of one controller run, from its first switch step to its end.

    ``switch`` is a :class:`SwitchEndpoint` (the session is opened on the first
    :meth:`step`, shared with the other runs of this process that reach the same switch with
    the same election id, and closed when the last of them ends), an open session (used as it
    is), or None (steps get None). A session the switch dropped (a restart) or whose primacy
    another controller took is opened again at the next step.
    """

    def __init__(self, switch: Any) -> None:
        self.switch = switch
        self._shared: _Shared | None = None

    async def _acquire(self) -> _Shared:
        key = _key(self.switch)
        async with _KEY_LOCKS.setdefault(key, asyncio.Lock()):
            shared = self._shared or _SHARED.get(key)
            if shared is None:
                shared = _SHARED[key] = _Shared(await _open(self.switch))
            elif not shared.session.is_primary:
                log.info("switch %s: the session was lost; opening it again", self.switch.address)
                await shared.session.close()
                shared.session = await _open(self.switch)
            if self._shared is None:
                shared.users += 1
                self._shared = shared
            return shared

    @contextlib.asynccontextmanager
    async def step(self) -> AsyncIterator[Any]:
        """The session, for one step of the run (other runs' steps wait meanwhile)."""
        if not isinstance(self.switch, SwitchEndpoint):
            yield self.switch
            return
        shared = await self._acquire()
        async with shared.turn:
            yield shared.session

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        key = _key(self.switch)
        async with _KEY_LOCKS.setdefault(key, asyncio.Lock()):
            shared.users -= 1
            if shared.users == 0:
                if _SHARED.get(key) is shared:
                    del _SHARED[key]
                await shared.session.close()


@contextlib.asynccontextmanager
async def switch_session(switch: Any) -> AsyncIterator[Any]:
    """A P4RTSession for ``switch`` (see :class:`SwitchLink`) for the length of the block."""
    link = SwitchLink(switch)
    try:
        async with link.step() as session:
            yield session
    finally:
        await link.close()


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _p4(keyspace: KeyspaceRef) -> Any:
    from netmigrate.p4rt import Keyspace

    return Keyspace(keyspace.keyspace_id, keyspace.address, keyspace.port)


async def check_switch(
    session: Any, keyspace: KeyspaceRef, servers: Iterable[int], source: int | None = None
) -> SwitchFacts:
    """Verify the switch can steer the keyspace between ``servers``; raise MigrationError
    naming everything that is missing. ``source``: also needs a sender_check entry (it sends
    SLOT_START / SLOT_COMPLETE)."""
    from netmigrate.p4rt import P4RuntimeError, describe, read_clone_sessions, read_table_entries

    tables = ["keyspace", "server_port", "server_rewrite", "sender_check"]
    try:
        entries = [describe(session, te) for te in await read_table_entries(session, tables)]
        clones = await read_clone_sessions(session)
    except P4RuntimeError as e:
        raise MigrationError(f"reading the switch's tables failed: {e}", code=e.code) from None
    by_table: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_table.setdefault(_short(e["table"]), []).append(e)
    problems: list[str] = []
    service_ip = int(ipaddress.IPv4Address(keyspace.address))
    facts = None
    for e in by_table.get("keyspace", []):
        match = {_short(k): v for k, v in e["match"].items()}
        if match.get("dstAddr") == service_ip and match.get("dstPort") == keyspace.port:
            params = e.get("params", {})
            facts = SwitchFacts(
                params.get("default_owner", 0),
                params.get("keyspace_id", 0),
                params.get("slot_base", 0),
            )
    if facts is None:
        problems.append(f"no keyspace entry for {keyspace.service}")

    def has(table: str, field: str, value: int) -> bool:
        return any(
            {_short(k): v for k, v in e["match"].items()}.get(field) == value
            for e in by_table.get(table, [])
        )

    for server in servers:
        if not has("server_port", "dest_server", server):
            problems.append(f"no server_port entry for server {server}")
        if not has("server_rewrite", "egress_server", server):
            problems.append(f"no server_rewrite entry for server {server}")
        if server not in clones:
            problems.append(f"no clone session {server} (double reads to server {server})")
    if source is not None and not has("sender_check", "source_id", source):
        problems.append(f"no sender_check entry for server {source} (its SLOT_START is dropped)")
    if problems:
        raise MigrationError(
            "the switch is not ready: " + "; ".join(problems), code="FAILED_PRECONDITION"
        )
    assert facts is not None
    return facts


async def read_slots(
    session: Any,
    keyspace: KeyspaceRef,
    slots: Iterable[int] | None = None,
    *,
    facts: SwitchFacts | None = None,
) -> dict[int, tuple[int, int]]:
    """``{slot: (owner, target)}`` as the switch has them (owner 0: the default owner).

    With ``facts`` (so the keyspace's ``slot_base`` is known) the register is read with one
    P4Runtime Read where the switch serves that (the lab switch: ~100x less CPU on both sides
    than a packet-out per slot, which matters when finalize checks thousands of slots while
    clients run); a switch that does not (BMv2) is asked through packet-outs.
    """
    got = await read_slot_entries(session, keyspace, slots, facts=facts)
    return {s: e.pair for s, e in got.items()}


async def read_slot_entries(
    session: Any,
    keyspace: KeyspaceRef,
    slots: Iterable[int] | None = None,
    *,
    facts: SwitchFacts | None = None,
    epochs: bool = False,
) -> dict[int, Any]:
    """``{slot: SlotEntry}`` as the switch has them, read as :func:`read_slots` does; with
    ``epochs`` each entry's ``epoch`` is the switch's ``slot_epoch`` (else it may be 0)."""
    from netmigrate.p4rt import P4RuntimeError, SlotMapIO, read_slot_map_register

    if facts is not None and slots is not None and not getattr(session, _NO_REGISTER_READ, False):
        try:
            return await read_slot_map_register(session, facts.slot_base, slots, epochs=epochs)
        except P4RuntimeError as e:
            log.info("register read refused (%s); reading the slot map with packet-outs", e)
            setattr(session, _NO_REGISTER_READ, True)
    try:
        # A SLOT_READ answer always carries the slot's epoch.
        return await SlotMapIO(session, _p4(keyspace)).read(slots)
    except P4RuntimeError as e:
        raise MigrationError(f"reading the slot map failed: {e}", code=e.code) from None


async def write_slots(
    session: Any,
    keyspace: KeyspaceRef,
    entries: Mapping[int, tuple[int, int]],
    epochs: Mapping[int, int] | None = None,
) -> None:
    """SLOT_SET each slot's ``(owner, target)``; with ``epochs``, raise the slot's epoch on
    the switch to at least the given one (a SLOT_SET never lowers it)."""
    from netmigrate.p4rt import P4RuntimeError, SlotEntry, SlotMapIO

    epochs = epochs or {}
    try:
        await SlotMapIO(session, _p4(keyspace)).write(
            {s: SlotEntry(o, t, epochs.get(s, 0)) for s, (o, t) in entries.items()}
        )
    except P4RuntimeError as e:
        raise MigrationError(f"writing the slot map failed: {e}", code=e.code) from None


def effective(entry: tuple[int, int], default_owner: int) -> tuple[int, int]:
    """The entry with owner byte 0 replaced by the keyspace's default owner."""
    owner, target = entry
    return (owner or default_owner, target)
