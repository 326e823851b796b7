"""The migration target's side (docs/migration.md, "Rules at the target while MIGRATING_IN").

For every slot that migrates in, the target keeps:

- **the dirty set** in Redis (``__netmigrate__:{tag}:dirty``, inside the slot): every client
  write or delete at the target adds its keys in the same MULTI/EXEC, so a write and its mark
  are one step and survive a crash of the agent;
- **authority** in memory: the keys whose current state the target has (written here, copied,
  or pulled). After a restart only the dirty keys count until the source copies again;
- **the hold queue**: client requests (other than double-read GETs) wait until the source's
  recent request ids arrived, so a write the source applied and a client retried here is
  answered from those ids, not applied twice. Bounded: BUSY when full or held too long;
- **per-key chains**: a request that must first pull a key from the source (it needs the old
  value and the target is not authoritative) and every later request on one of its keys run in
  arrival order, one after the other (a pull and the write that needed it are one step).

Double reads: a GET copy (DOUBLE_READ) is answered from Redis when the target is authoritative
for the key (OK or NOT_FOUND: a dirty, absent key is a tombstone), else MISS, and the client
takes the source's frozen answer. MGET (and a plain read) pulls what it lacks, then answers.

One module per part: ``transitions`` (SLOT_START / SLOT_COMPLETE), ``requests`` (client
requests, pulls, chains), ``holding`` (the hold queue), ``intake`` (request ids and copied keys
from the source), ``rollback`` (slots given back to the source, slots lost with Redis' data);
``side``: :class:`TargetSide`, which wires them and is what the agent calls.
"""

from netmigrate.agent.target.model import NotMigratingIn, TargetDataLost
from netmigrate.agent.target.side import TargetSide

__all__ = ["NotMigratingIn", "TargetDataLost", "TargetSide"]
