"""Follow a digest: enable it on the switch, yield its lists, acknowledge each.

::

    async for lst in follow_digests(session, "slot_transition_t"):
        for msg in lst.messages:  # {"keyspace": 1, "slot": 42, ...}
            ...

A list is acknowledged when the consumer asks for the next one (so a consumer that crashes
mid-list leaves it unacknowledged, and the switch may send it again after
``ack_timeout_ns``). The digest stays enabled when the iterator ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from finsy.proto import p4d, p4r

from netmigrate.p4rt.errors import P4RuntimeError, WriteError
from netmigrate.p4rt.session import P4RTSession

Update = p4r.Update


@dataclass(frozen=True, slots=True)
class DigestList:
    digest: str
    list_id: int
    timestamp_ns: int
    messages: tuple[dict[str, int], ...]


def _decode(data: p4d.P4Data, members: list[str]) -> dict[str, int]:
    if data.WhichOneof("data") == "struct":
        values = [int.from_bytes(m.bitstring, "big") for m in data.struct.members]
        return dict(zip(members, values, strict=True))
    return {"value": int.from_bytes(data.bitstring, "big")}


async def enable_digest(
    session: P4RTSession,
    digest: str,
    *,
    max_timeout_ns: int = 0,
    max_list_size: int = 1,
    ack_timeout_ns: int = 1_000_000_000,
) -> int:
    """Enable (or reconfigure) ``digest`` on the switch; returns its id."""
    try:
        digest_id = session.schema.digests[digest].id
    except KeyError:
        raise P4RuntimeError(f"no digest {digest!r} in the P4Info", code="NOT_FOUND") from None
    entry = p4r.DigestEntry(
        digest_id=digest_id,
        config=p4r.DigestEntry.Config(
            max_timeout_ns=max_timeout_ns,
            max_list_size=max_list_size,
            ack_timeout_ns=ack_timeout_ns,
        ),
    )
    # INSERT, and MODIFY when it is already enabled: BMv2's server does not read DigestEntry.
    try:
        await session.write([Update(type=Update.INSERT, entity=p4r.Entity(digest_entry=entry))])
    except WriteError as exc:
        if exc.detail_codes != {"ALREADY_EXISTS"}:
            raise
        await session.write([Update(type=Update.MODIFY, entity=p4r.Entity(digest_entry=entry))])
    return digest_id


async def follow_digests(
    session: P4RTSession,
    digest: str,
    *,
    max_timeout_ns: int = 0,
    max_list_size: int = 1,
    ack_timeout_ns: int = 1_000_000_000,
) -> AsyncIterator[DigestList]:
    """Enable ``digest`` and yield its :class:`DigestList` s until the stream ends."""
    queue = session.subscribe_digests(session.schema.digests[digest].id)
    try:
        digest_id = await enable_digest(
            session,
            digest,
            max_timeout_ns=max_timeout_ns,
            max_list_size=max_list_size,
            ack_timeout_ns=ack_timeout_ns,
        )
        type_spec = session.schema.digests[digest].type_spec
        members: list[str] = list(getattr(type_spec, "members", {}).keys())
        while True:
            lst = await session.next_digest_list(queue)
            yield DigestList(
                digest,
                lst.list_id,
                lst.timestamp,
                tuple(_decode(d, members) for d in lst.data),
            )
            await session.ack_digest(digest_id, lst.list_id)
    finally:
        session.unsubscribe_digests(session.schema.digests[digest].id)
