"""Live migration controller: move slots of a keyspace from one agent to another.

The agents do the migration (docs/migration.md); this package drives them over their gRPC
control service and checks the switch over P4Runtime. Everything is asyncio and idempotent: a
migration is named by an id (derived from keyspace, source, target and slots unless given), and
running a finished migration again changes nothing and says so (``result.changed is False``).

Endpoints::

    from netmigrate.migration import AgentEndpoint, KeyspaceRef, MigrationOptions, SwitchEndpoint

    # MigrationOptions(batch=256, rate=None, parallel=4, grace=1.0, poll=0.2, source_unreachable=10)
    source = AgentEndpoint(server_id=1, control="10.0.0.1:7000")
    target = AgentEndpoint(server_id=2, control="10.0.0.2:7000")   # data="10.0.0.2:50001" optional
    keyspace = KeyspaceRef(keyspace_id=50000, address="10.0.0.100", port=50000)
    switch = SwitchEndpoint("127.0.0.1:9559", device_id=1, election_id=10)
    # ``switch`` may also be an open netmigrate.p4rt.P4RTSession (primary), or None to skip
    # every switch check (agent-level use: the service address then points at the target).
    # AgentEndpoint(..., tls=ControlTls(ca=..., cert=..., key=..., server_name=...)) for TLS.

The API (all coroutines)::

    plan(source, target, slots, *, keyspace, switch=None) -> Plan
        Check mode: which slots would move, which are skipped (target owns them already), which
        are refused (nobody owns them here) and how many keys; nothing is changed.
    run(source, target, slots, *, keyspace, switch=None, options=MigrationOptions(),
        progress=None, migration_id=None, finalize=True, timeout=None) -> MigrationResult
        Prepare (both agents reachable and who they say they are; with a switch: keyspace,
        server_port, server_rewrite, sender_check entries and the target's clone session
        present), start on the source agent, wait (``progress(Progress)`` called about every
        ``options.poll`` seconds), then finalize: compare the switch's slot map (SLOT_READ) with
        both agents, wait ``options.grace`` seconds and delete the moved keys at the source.
        Returns per-slot results and timings. Raises MigrationError when a step fails.
    status(source, migration_id=None, *, include_slots=False) -> list[MigrationResult]
    wait(source, migration_id, *, progress=None, poll=0.2, timeout=None, unreachable=10.0)
        -> MigrationStatus (protobuf); an unreachable source is waited for ``unreachable`` s
    abort(source, migration_id, *, wait_done=True, progress=None) -> MigrationResult
        No new slot starts; slots in flight finish, so every slot ends wholly at one side.
    resume(source, migration_id, *, wait_done=True, progress=None, finalize=False,
           target=None, keyspace=None, switch=None, options=None) -> MigrationResult
        Continue from the agents' persisted progress after any crash, failure or abort.
        ``options.rate``, when given, becomes the migration's rate limit first.
    set_rate(source, migration_id, rate) -> MigrationResult
        Change the rate limit of a migration, running or not (the next wave is paced by it).
        ``run`` does the same when ``options.rate`` differs from a running migration's.
    current_migration_id(source, keyspace, target, slots) -> str
        The latest run of the migration these arguments derive (``<id>``, ``<id>.2``...).
    finalize(source, target, migration_id, *, keyspace, switch=None, grace=1.0) -> FinalizeResult
    reconcile(switch, keyspace, agents, *, check=False) -> ReconcileResult
        Rebuild the switch's slot_map from the agents' persisted state (owned slots, slots in
        flight -> owner=source, target=target) with packet-out SLOT_SET writes (never
        RegisterEntry); reports what it changed (or would change, with ``check``).

Results are dataclasses with ``to_json()``: MigrationResult (migration_id, state DONE /
FINALIZED / ABORTED / FAILED, changed, message, slot counts, keys_copied, started / finished /
duration, ``slots``: per-slot SlotResult with outcome, keys, started / frozen / finished times,
attempts, error; ``finalize``: FinalizeResult). Failures raise MigrationError (``code``, and
``result`` when there is one). A migration keeps running at the agents when the controller goes
away; ``status`` / ``wait`` / ``resume`` pick it up again.

Each call reaches each agent over one gRPC channel and the switch over one session, kept from
its first use to its end; several calls inside one ``async with connections():`` (from
:mod:`netmigrate.migration.connections`) share them, and calls of one process that reach the
same switch with the same election id share its session.

``netmigrate migrate`` (migration/cli.py) is the command-line front end: progress bar on stderr,
JSON result on stdout.
"""

from netmigrate.migration.controller import (
    abort,
    current_migration_id,
    finalize,
    plan,
    reconcile,
    resume,
    run,
    set_rate,
    status,
    wait,
)
from netmigrate.migration.model import (
    AgentEndpoint,
    ControlTls,
    FinalizeResult,
    KeyspaceRef,
    MigrationError,
    MigrationOptions,
    MigrationResult,
    Plan,
    Progress,
    ReconcileResult,
    SlotResult,
    SwitchEndpoint,
    migration_id_for,
)

__all__ = [
    "AgentEndpoint",
    "ControlTls",
    "FinalizeResult",
    "KeyspaceRef",
    "MigrationError",
    "MigrationOptions",
    "MigrationResult",
    "Plan",
    "Progress",
    "ReconcileResult",
    "SlotResult",
    "SwitchEndpoint",
    "abort",
    "current_migration_id",
    "finalize",
    "migration_id_for",
    "plan",
    "reconcile",
    "resume",
    "run",
    "set_rate",
    "status",
    "wait",
]
