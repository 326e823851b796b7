"""Controller-side P4Runtime helpers on top of finsy.

Used by the Ansible modules and the migration controller, against the lab switch and BMv2's
``simple_switch_grpc`` alike (pass ``device_id``: 1 in the lab, 0 for BMv2)::

    async with P4RTSession(addr, device_id=1, election_id=10) as s:
        await install_pipeline(s, PipelineConfig.load(p4info_path, device_config_path))
        await ensure_table_entries(s, [TableEntrySpec("server_port", {...}, "set_server_port",
                                                      {"port": 1})])
        await ensure_clone_sessions(s, [CloneSessionSpec.to_port(1, 1)])
        slots = await read_slot_map(s, Keyspace(1, "10.0.0.100", 50000))
"""

from netmigrate.p4rt.counters import CounterValue, read_counters
from netmigrate.p4rt.digests import DigestList, enable_digest, follow_digests
from netmigrate.p4rt.entries import (
    EntriesResult,
    TableEntrySpec,
    describe,
    ensure_table_entries,
    read_table_entries,
)
from netmigrate.p4rt.errors import (
    NoPipelineError,
    NotPrimaryError,
    P4RuntimeError,
    PipelineMismatchError,
    SlotMapError,
    SwitchUnreachableError,
    UpdateError,
    WriteError,
)
from netmigrate.p4rt.pipeline import (
    PipelineConfig,
    PipelineResult,
    current_cookie,
    fetch_p4info,
    install_pipeline,
    pipeline_cookie,
)
from netmigrate.p4rt.pre import (
    CloneSessionSpec,
    CloneSessionsResult,
    ensure_clone_sessions,
    read_clone_sessions,
)
from netmigrate.p4rt.session import P4RTSession, PacketIn, TlsOptions
from netmigrate.p4rt.slotmap import (
    Keyspace,
    SlotEntry,
    SlotMapIO,
    read_slot_map,
    read_slot_map_register,
    restore_slot_map,
)

__all__ = [
    "CloneSessionSpec",
    "CloneSessionsResult",
    "CounterValue",
    "DigestList",
    "EntriesResult",
    "Keyspace",
    "NoPipelineError",
    "NotPrimaryError",
    "P4RTSession",
    "P4RuntimeError",
    "PacketIn",
    "PipelineConfig",
    "PipelineMismatchError",
    "PipelineResult",
    "SlotEntry",
    "SlotMapError",
    "SlotMapIO",
    "SwitchUnreachableError",
    "TableEntrySpec",
    "TlsOptions",
    "UpdateError",
    "WriteError",
    "current_cookie",
    "describe",
    "enable_digest",
    "ensure_clone_sessions",
    "ensure_table_entries",
    "fetch_p4info",
    "follow_digests",
    "install_pipeline",
    "pipeline_cookie",
    "read_clone_sessions",
    "read_counters",
    "read_slot_map",
    "read_slot_map_register",
    "read_table_entries",
    "restore_slot_map",
]
