"""The migration source's side (docs/migration.md, "Steps at the source").

Per slot: persist MIGRATING_OUT(starting) -> SLOT_START through the switch (resent until the
target acknowledges) -> the acknowledgement, handled in arrival order with client requests,
freezes the slot and puts a barrier into the Redis pipeline (every earlier request is applied
when it returns) -> persist "copying" -> the slot's request ids to the target -> the copy
(GETKEYSINSLOT, DUMP + PTTL, batches pipelined over one gRPC stream, each acknowledged) ->
persist "completing" -> SLOT_COMPLETE through the switch (resent until acknowledged) -> persist
NOT_OWNED ("done": the keys stay until finalize). Every step is idempotent, so any failure (or a
restart) continues from the persisted phase: "starting" and "copying" redo START, ids and copy;
"completing" resends COMPLETE.

Slots move in **waves** (up to ``parallel_slots`` slots and WAVE_KEYS keys): each step runs
once for the whole wave (one persisted change, the STARTs back to back, one id transfer, one
copy stream), so the per-slot cost is a fraction of a round trip. A slot that fails in a wave,
or was in flight when the migration (re)started, goes on alone from its persisted phase.

One module per step (DESIGN section 6):

- ``prepare``: the request checked, the target asked, the slots classified (step 1);
- ``lifecycle``: start, abort, resume, rate, and taking migrations up after a restart;
- ``persistence``: the slots' persisted records, freeze barriers and table state;
- ``waves``: the run of a migration, wave by wave and slot by slot (steps 2-4 in order);
- ``transitions``: SLOT_START / SLOT_COMPLETE and their acknowledgements, the freeze (2, 4);
- ``handover``: the slots' request ids to the target (2);
- ``copy``: the copy stream and priority pulls (3), reading keys through ``keys``;
- ``finalize``: the moved keys deleted once the target owns them (5);
- ``side``: :class:`SourceSide`, which wires them and is what the agent calls.
"""

from netmigrate.agent.source.model import MigrationRequestError
from netmigrate.agent.source.side import SourceSide

__all__ = ["MigrationRequestError", "SourceSide"]
