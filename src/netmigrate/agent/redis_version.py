"""Which Redis an agent fronts, and which DUMP payloads it can RESTORE.

A DUMP payload ends with the RDB version that wrote it (2 bytes, little endian) and a CRC64
(8 bytes); RESTORE refuses a payload of a newer RDB version than its own server writes. A
migration compares both agents' versions before its first slot moves (see
``source.prepare``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netmigrate.agent.reserved import RESERVED_PREFIX

#: A throwaway key for the probe (reserved: never a client key, never copied).
PROBE_KEY = RESERVED_PREFIX + b"rdb-probe"


@dataclass(frozen=True, slots=True)
class RedisVersion:
    version: str
    #: The RDB version of the DUMP payloads this Redis writes (the newest it can RESTORE).
    rdb: int

    def describe(self) -> str:
        return f"Redis {self.version} (RDB version {self.rdb})"


def rdb_version_of(payload: bytes) -> int:
    """The RDB version a DUMP payload was written with."""
    if len(payload) < 10:
        raise ValueError("not a DUMP payload")
    return int.from_bytes(payload[-10:-8], "little")


async def probe(admin: Any) -> RedisVersion:
    """Ask the agent's Redis (a redis-py asyncio client) for its version and RDB version."""
    info = await admin.info("server")
    # A tiny value written, DUMPed and deleted in one MULTI/EXEC: no key needs to exist, and
    # no scripting right is needed (the data path's own check names that one clearly).
    pipe = admin.pipeline(transaction=True)
    pipe.set(PROBE_KEY, b"x")
    pipe.dump(PROBE_KEY)
    pipe.delete(PROBE_KEY)
    _, payload, _ = await pipe.execute()
    return RedisVersion(str(info.get("redis_version", "?")), rdb_version_of(payload))


def restore_refusal(source: RedisVersion, target: RedisVersion, target_id: int) -> str | None:
    """Why the target cannot take the source's DUMPs, or None when it can. A target that did
    not report an RDB version (0: an agent older than this check) is let through."""
    if target.rdb and source.rdb > target.rdb:
        return (
            f"server {target_id} runs {target.describe()} and cannot RESTORE the DUMPs of this "
            f"server's {source.describe()}: upgrade the target's Redis (or move the slots the "
            "other way) before migrating"
        )
    return None
