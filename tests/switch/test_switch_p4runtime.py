"""P4Runtime behaviour of the real lab switch process, through finsy (the P4Runtime client the
project uses): arbitration, pipeline config, writes with their error codes, reads."""

from __future__ import annotations

import asyncio

import finsy as fy
import pytest
from finsy.grpcutil import GRPCStatusCode
from finsy.p4client import P4Client, P4ClientError
from finsy.proto import U128, p4i, p4r
from google.protobuf import text_format
from support.p4rt_clients import finsy_options, primary_options

from netmigrate.lab.forwarding import DEVICE_CONFIG
from netmigrate.resources import p4info_path
from netmigrate.switch.p4info import load_p4info

LPM = "NetMigrateIngress.ipv4_lpm"
KEYSPACE = "NetMigrateIngress.keyspace"
SERVER_PORT = "NetMigrateIngress.server_port"


def route(prefix: str, port: int, mac: int = 0x020000000001) -> fy.P4TableEntry:
    return fy.P4TableEntry(
        LPM,
        match=fy.P4TableMatch({"hdr.ipv4.dstAddr": prefix}),
        action=fy.P4TableAction("ipv4_forward", dst_mac=mac, port=port),
    )


async def read_all(sw: fy.Switch, entity) -> list:
    return [e async for e in sw.read(entity)]


async def expect_error(coro, code: GRPCStatusCode) -> P4ClientError:
    with pytest.raises(P4ClientError) as info:
        await coro
    exc = info.value
    codes = {exc.code} | {d.canonical_code for d in exc.details.values()}
    assert code in codes, str(exc)
    return exc


# -- arbitration ---------------------------------------------------------------------------


async def test_primary_and_backup(switch):
    async with fy.Switch("primary", switch.address, primary_options()) as a:
        assert a.is_primary
        async with fy.Switch("backup", switch.address, finsy_options(initial_election_id=5)) as b:
            assert not b.is_primary
            assert b.primary_id == 10
            # The backup may read but not write.
            assert await read_all(b, fy.P4TableEntry()) == []
            exc = await expect_error(
                b.insert([route("10.0.0.0/24", 1)]), GRPCStatusCode.PERMISSION_DENIED
            )
            assert "primary" in exc.message
            await a.insert([route("10.0.0.0/24", 1)])
            assert len(await read_all(b, fy.P4TableEntry())) == 1


async def test_higher_election_id_takes_over_and_old_primary_learns(switch):
    async with fy.Switch("a", switch.address, primary_options()) as a:
        assert a.is_primary
        async with fy.Switch("b", switch.address, finsy_options(initial_election_id=20)) as b:
            assert b.is_primary
            # The switch tells the old primary at once (MasterArbitrationUpdate to all).
            for _ in range(100):
                if not a.is_primary:
                    break
                await asyncio.sleep(0.02)
            assert not a.is_primary
            assert a.primary_id == 20
            await expect_error(
                a.insert([route("10.1.0.0/16", 1)]), GRPCStatusCode.PERMISSION_DENIED
            )
            await b.insert([route("10.1.0.0/16", 1)])


async def test_duplicate_election_id_is_refused(switch):
    async with fy.Switch("a", switch.address, primary_options()):
        client = P4Client(switch.address, wait_for_ready=False)
        await client.open()
        try:
            await client.send(
                p4r.StreamMessageRequest(
                    arbitration=p4r.MasterArbitrationUpdate(
                        device_id=1, election_id=U128.encode(10)
                    )
                )
            )
            with pytest.raises(P4ClientError) as info:
                await client.receive()
            assert info.value.code == GRPCStatusCode.INVALID_ARGUMENT
            assert info.value.is_election_id_used
        finally:
            await client.close()


async def test_unknown_device_id_is_refused(switch):
    client = P4Client(switch.address, wait_for_ready=False)
    await client.open()
    try:
        await client.send(
            p4r.StreamMessageRequest(
                arbitration=p4r.MasterArbitrationUpdate(device_id=7, election_id=U128.encode(1))
            )
        )
        with pytest.raises(P4ClientError) as info:
            await client.receive()
        assert info.value.code == GRPCStatusCode.NOT_FOUND
    finally:
        await client.close()


async def test_write_without_stream_is_permission_denied(switch):
    async with fy.Switch("a", switch.address, primary_options()):
        pass  # commits the pipeline, then leaves: no primary any more
    client = P4Client(switch.address, wait_for_ready=False)
    await client.open()
    try:
        req = p4r.WriteRequest(device_id=1, election_id=U128.encode(10))
        await expect_error(client.request(req), GRPCStatusCode.PERMISSION_DENIED)
    finally:
        await client.close()


# -- pipeline config -----------------------------------------------------------------------


async def test_pipeline_set_get_cookie(switch):
    async with fy.Switch("a", switch.address, finsy_options()) as sw:
        client = sw._p4client  # finsy's channel, for raw requests with our election id
        assert client is not None
        # Before any config: reads and writes fail with FAILED_PRECONDITION, Get is empty.
        reply = await client.request(p4r.GetForwardingPipelineConfigRequest(device_id=1))
        assert not reply.HasField("config")
        exc = await expect_error(
            read_all(sw, fy.P4TableEntry()), GRPCStatusCode.FAILED_PRECONDITION
        )
        assert exc.is_pipeline_missing

        p4info = load_p4info(p4info_path())
        config = p4r.ForwardingPipelineConfig(
            p4info=p4info,
            p4_device_config=DEVICE_CONFIG,
            cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=0xABCDEF),
        )
        set_req = p4r.SetForwardingPipelineConfigRequest(
            device_id=1,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY,
            config=config,
        )
        await client.request(set_req)
        # VERIFY changes nothing.
        reply = await client.request(p4r.GetForwardingPipelineConfigRequest(device_id=1))
        assert not reply.HasField("config")

        set_req.action = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT
        await client.request(set_req)
        rt = p4r.GetForwardingPipelineConfigRequest.ResponseType
        cfg = (
            await client.request(
                p4r.GetForwardingPipelineConfigRequest(device_id=1, response_type=rt.COOKIE_ONLY)
            )
        ).config
        assert cfg.cookie.cookie == 0xABCDEF
        assert not cfg.HasField("p4info") and cfg.p4_device_config == b""
        cfg = (
            await client.request(
                p4r.GetForwardingPipelineConfigRequest(
                    device_id=1, response_type=rt.P4INFO_AND_COOKIE
                )
            )
        ).config
        assert cfg.p4info == p4info and cfg.p4_device_config == b""
        cfg = (
            await client.request(
                p4r.GetForwardingPipelineConfigRequest(
                    device_id=1, response_type=rt.DEVICE_CONFIG_AND_COOKIE
                )
            )
        ).config
        assert cfg.p4_device_config == DEVICE_CONFIG and not cfg.HasField("p4info")
        cfg = (await client.request(p4r.GetForwardingPipelineConfigRequest(device_id=1))).config
        assert cfg.p4info == p4info and cfg.p4_device_config == DEVICE_CONFIG
        assert cfg.cookie.cookie == 0xABCDEF

        # VERIFY_AND_COMMIT clears forwarding state; RECONCILE_AND_COMMIT keeps it.
        await sw.insert([route("10.2.0.0/16", 1)])
        set_req.action = p4r.SetForwardingPipelineConfigRequest.RECONCILE_AND_COMMIT
        set_req.config.cookie.cookie = 7
        await client.request(set_req)
        assert len(await read_all(sw, fy.P4TableEntry())) == 1
        set_req.action = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT
        await client.request(set_req)
        assert await read_all(sw, fy.P4TableEntry()) == []

        for action in (
            p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_SAVE,
            p4r.SetForwardingPipelineConfigRequest.COMMIT,
        ):
            set_req.action = action
            await expect_error(client.request(set_req), GRPCStatusCode.UNIMPLEMENTED)


async def test_finsy_installs_pipeline_by_cookie(switch):
    async with fy.Switch("a", switch.address, finsy_options(p4blob=DEVICE_CONFIG)) as sw:
        cookie = sw.p4info.p4cookie
        await sw.insert([route("10.3.0.0/16", 1)])
    # finsy reconnecting with the same P4Info + blob sees its cookie and does not reinstall.
    async with fy.Switch("a", switch.address, finsy_options(p4blob=DEVICE_CONFIG)) as sw:
        assert sw.p4info.p4cookie == cookie
        assert len(await read_all(sw, fy.P4TableEntry())) == 1


def _altered_p4info(edit) -> p4i.P4Info:
    info = load_p4info(p4info_path())
    edit(info)
    return info


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda i: setattr(
                next(t for t in i.tables if t.preamble.name == KEYSPACE).match_fields[1],
                "bitwidth",
                8,
            ),
            "tables['NetMigrateIngress.keyspace'].match_fields['hdr.udp.dstPort'].bitwidth is 8,"
            " expected 16",
        ),
        (lambda i: i.tables.pop(), "tables['NetMigrateEgress.server_rewrite'] is missing"),
        (
            lambda i: setattr(i.pkg_info, "arch", "psa"),
            "pkg_info.arch is 'psa', expected 'v1model'",
        ),
        (
            lambda i: i.actions.add().preamble.MergeFrom(p4i.Preamble(id=16777299, name="x.y")),
            "actions['x.y'] is not part of this pipeline",
        ),
    ],
)
async def test_foreign_p4info_is_rejected_naming_the_difference(switch, edit, needle):
    async with fy.Switch("a", switch.address, finsy_options()) as sw:
        client = sw._p4client
        assert client is not None
        for action in (
            p4r.SetForwardingPipelineConfigRequest.VERIFY,
            p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
        ):
            req = p4r.SetForwardingPipelineConfigRequest(
                device_id=1,
                action=action,
                config=p4r.ForwardingPipelineConfig(
                    p4info=_altered_p4info(edit), p4_device_config=DEVICE_CONFIG
                ),
            )
            exc = await expect_error(client.request(req), GRPCStatusCode.INVALID_ARGUMENT)
            assert needle in exc.message
        # Nothing was installed.
        reply = await client.request(p4r.GetForwardingPipelineConfigRequest(device_id=1))
        assert not reply.HasField("config")


async def test_p4info_in_another_order_and_with_docs_is_accepted(switch):
    info = load_p4info(p4info_path())
    tables = list(info.tables)
    del info.tables[:]
    info.tables.extend(reversed(tables))
    info.tables[0].preamble.doc.brief = "documentation is not the pipeline"
    async with fy.Switch("a", switch.address, finsy_options()) as sw:
        req = p4r.SetForwardingPipelineConfigRequest(
            device_id=1,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
            config=p4r.ForwardingPipelineConfig(p4info=info),
        )
        assert sw._p4client is not None
        await sw._p4client.request(req)


# -- writes --------------------------------------------------------------------------------


async def test_table_insert_modify_delete(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await sw.insert([route("10.0.0.0/24", 1), route("10.0.0.0/16", 2)])
        await expect_error(sw.insert([route("10.0.0.0/24", 3)]), GRPCStatusCode.ALREADY_EXISTS)
        await sw.modify([route("10.0.0.0/24", 3, mac=0x020000000003)])
        entries = {e.match["dstAddr"]: e for e in await read_all(sw, fy.P4TableEntry(LPM))}
        assert entries[(0x0A000000, 24)].action.args == {"dst_mac": 0x020000000003, "port": 3}
        assert entries[(0x0A000000, 16)].action.args["port"] == 2
        await sw.delete([route("10.0.0.0/24", 0)])
        await expect_error(sw.delete([route("10.0.0.0/24", 0)]), GRPCStatusCode.NOT_FOUND)
        await expect_error(sw.modify([route("10.9.0.0/24", 1)]), GRPCStatusCode.NOT_FOUND)
        left = await read_all(sw, fy.P4TableEntry(LPM))
        assert [e.match["dstAddr"] for e in left] == [(0x0A000000, 16)]


async def test_default_entry_modify_and_reset(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        default = fy.P4TableEntry(LPM, is_default_action=True)
        [entry] = await read_all(sw, default)
        assert entry.action.name == "drop"
        await sw.modify(
            [
                fy.P4TableEntry(
                    LPM,
                    is_default_action=True,
                    action=fy.P4TableAction("ipv4_forward", dst_mac=5, port=4),
                )
            ]
        )
        [entry] = await read_all(sw, default)
        assert entry.action.name == "ipv4_forward" and entry.action.args["port"] == 4
        # MODIFY without an action resets the default to the program's.
        await sw.modify([fy.P4TableEntry(LPM, is_default_action=True)])
        [entry] = await read_all(sw, default)
        assert entry.action.name == "drop"
        # INSERT / DELETE of a default entry: INVALID_ARGUMENT.
        await expect_error(
            sw.insert(
                [fy.P4TableEntry(LPM, is_default_action=True, action=fy.P4TableAction("drop"))]
            ),
            GRPCStatusCode.INVALID_ARGUMENT,
        )


async def test_action_scope(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        # @defaultonly action in an entry: PERMISSION_DENIED (spec, "Action Specification").
        entry = fy.P4TableEntry(
            SERVER_PORT,
            match=fy.P4TableMatch({"meta.dest_server": 1}),
            action=fy.P4TableAction("unknown_server"),
        )
        await expect_error(sw.insert([entry]), GRPCStatusCode.PERMISSION_DENIED)
        # ... but fine as the default.
        await sw.modify(
            [
                fy.P4TableEntry(
                    SERVER_PORT, is_default_action=True, action=fy.P4TableAction("unknown_server")
                )
            ]
        )


def _raw_entry(table_id: int, matches, action_id: int, params) -> p4r.Update:
    return p4r.Update(
        type=p4r.Update.INSERT,
        entity=p4r.Entity(
            table_entry=p4r.TableEntry(
                table_id=table_id,
                match=matches,
                action=p4r.TableAction(
                    action=p4r.Action(
                        action_id=action_id,
                        params=[p4r.Action.Param(param_id=i, value=v) for i, v in params],
                    )
                ),
            )
        ),
    )


async def test_invalid_entries_and_per_update_errors(switch):
    """A batch with bad updates: each gets its own p4.Error, the good ones are applied."""
    info = load_p4info(p4info_path())
    tables = {t.preamble.name: t for t in info.tables}
    actions = {a.preamble.name: a.preamble.id for a in info.actions}
    lpm_id = tables[LPM].preamble.id
    sp_id = tables[SERVER_PORT].preamble.id
    fwd = actions["NetMigrateIngress.ipv4_forward"]
    set_port = actions["NetMigrateIngress.set_server_port"]

    def lpm(value: bytes, plen: int) -> list[p4r.FieldMatch]:
        return [p4r.FieldMatch(field_id=1, lpm=p4r.FieldMatch.LPM(value=value, prefix_len=plen))]

    def exact(value: bytes) -> list[p4r.FieldMatch]:
        return [p4r.FieldMatch(field_id=1, exact=p4r.FieldMatch.Exact(value=value))]

    updates = [
        _raw_entry(lpm_id, lpm(b"\x0a\x00\x00\x00", 8), fwd, [(1, b"\x01"), (2, b"\x01")]),  # ok
        _raw_entry(sp_id, exact(b"\x01\x00"), set_port, [(1, b"\x01")]),  # 256 > bit<8>
        _raw_entry(sp_id, exact(b"\x02"), set_port, [(1, b"\x02\x00")]),  # port 512 > bit<9>
        _raw_entry(sp_id, exact(b"\x03"), fwd, [(1, b"\x01"), (2, b"\x01")]),  # wrong action
        _raw_entry(lpm_id, lpm(b"\x0a\x00\x00\x01", 8), fwd, [(1, b"\x01"), (2, b"\x01")]),
        _raw_entry(lpm_id, lpm(b"\x0b\x00\x00\x00", 33), fwd, [(1, b"\x01"), (2, b"\x01")]),
        _raw_entry(sp_id, exact(b"\x04"), set_port, []),  # missing parameter
        _raw_entry(sp_id, exact(b"\x05"), set_port, [(1, b"\x05")]),  # ok
        _raw_entry(0x7777, exact(b"\x05"), set_port, [(1, b"\x05")]),  # unknown table
        _raw_entry(sp_id, exact(b""), set_port, [(1, b"\x05")]),  # empty bytestring
    ]
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        assert sw._p4client is not None
        req = p4r.WriteRequest(device_id=1, election_id=U128.encode(10), updates=updates)
        with pytest.raises(P4ClientError) as info_:
            await sw._p4client.request(req)
        exc = info_.value
        assert exc.code == GRPCStatusCode.UNKNOWN
        failed = {i: d.canonical_code for i, d in exc.details.items()}
        assert failed == {i: GRPCStatusCode.INVALID_ARGUMENT for i in (1, 2, 3, 4, 5, 6, 8, 9)}
        messages = {i: d.message for i, d in exc.details.items()}
        assert "does not fit within 8 bits" in messages[1]
        assert "does not fit within 9 bits" in messages[2]
        assert "not an action of" in messages[3]
        assert "beyond the /8 prefix" in messages[4]
        assert "prefix_len 33" in messages[5]
        assert "parameters missing: port" in messages[6]
        # The good updates of the batch were applied (CONTINUE_ON_ERROR).
        assert len(await read_all(sw, fy.P4TableEntry())) == 2


async def test_rollback_on_error_applies_nothing(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await sw.insert([route("10.5.0.0/16", 1)])
        good = route("10.6.0.0/16", 1).encode(sw.p4info)
        dup = route("10.5.0.0/16", 2).encode(sw.p4info)
        for atomicity in (
            p4r.WriteRequest.ROLLBACK_ON_ERROR,
            p4r.WriteRequest.DATAPLANE_ATOMIC,
        ):
            req = p4r.WriteRequest(
                device_id=1,
                election_id=U128.encode(10),
                atomicity=atomicity,
                updates=[
                    p4r.Update(type=p4r.Update.INSERT, entity=good),
                    p4r.Update(
                        type=p4r.Update.DELETE, entity=route("10.5.0.0/16", 0).encode(sw.p4info)
                    ),
                    p4r.Update(type=p4r.Update.INSERT, entity=dup),
                    p4r.Update(type=p4r.Update.INSERT, entity=dup),  # fails: exists by now
                ],
            )
            assert sw._p4client is not None
            with pytest.raises(P4ClientError) as info:
                await sw._p4client.request(req)
            assert info.value.details[3].canonical_code == GRPCStatusCode.ALREADY_EXISTS
            assert info.value.details[0].canonical_code == GRPCStatusCode.ABORTED
            entries = await read_all(sw, fy.P4TableEntry())
            assert [(e.match["dstAddr"], e.action.args["port"]) for e in entries] == [
                ((0x0A050000, 16), 1)
            ]


async def test_table_full_is_resource_exhausted(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        size = sw.p4info.tables[KEYSPACE].size
        entries = [
            fy.P4TableEntry(
                KEYSPACE,
                match=fy.P4TableMatch({"hdr.ipv4.dstAddr": i + 1, "hdr.udp.dstPort": 50000}),
                action=fy.P4TableAction(
                    "set_keyspace", keyspace_id=i, default_owner=1, slot_base=0
                ),
            )
            for i in range(size + 1)
        ]
        await sw.insert(entries[:size])
        await expect_error(sw.insert(entries[size:]), GRPCStatusCode.RESOURCE_EXHAUSTED)


# -- reads ---------------------------------------------------------------------------------


async def test_wildcard_reads(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await sw.insert(
            [
                route("10.0.0.0/8", 1),
                route("10.1.0.0/16", 2),
                fy.P4TableEntry(
                    SERVER_PORT,
                    match=fy.P4TableMatch({"meta.dest_server": 3}),
                    action=fy.P4TableAction("set_server_port", port=3),
                ),
            ]
        )
        everything = await read_all(sw, fy.P4TableEntry())
        assert sorted(e.table_id for e in everything) == ["ipv4_lpm", "ipv4_lpm", "server_port"]
        assert len(await read_all(sw, fy.P4TableEntry(LPM))) == 2
        one = await read_all(
            sw, fy.P4TableEntry(LPM, match=fy.P4TableMatch({"hdr.ipv4.dstAddr": "10.1.0.0/16"}))
        )
        assert [e.action.args["port"] for e in one] == [2]
        # Filter by action id: only set_server_port entries.
        by_action = await read_all(
            sw, fy.P4TableEntry(SERVER_PORT, action=fy.P4TableAction("set_server_port"))
        )
        assert len(by_action) == 1
        # Read-write symmetry: the canonical encoding comes back.
        [raw] = [
            e
            async for e in _raw_read(
                sw,
                p4r.Entity(table_entry=p4r.TableEntry(table_id=sw.p4info.tables[SERVER_PORT].id)),
            )
        ]
        assert raw.table_entry.match[0].exact.value == b"\x03"
        assert raw.table_entry.action.action.params[0].value == b"\x03"


async def _raw_read(sw: fy.Switch, *entities):
    assert sw._p4client is not None
    async for reply in sw._p4client.request_iter(p4r.ReadRequest(device_id=1, entities=entities)):
        for e in reply.entities:
            yield e


async def test_counter_reads(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        size = sw.p4info.counters["decision_counter"].size
        cells = await read_all(sw, fy.P4CounterEntry("decision_counter"))
        assert sorted(c.index for c in cells) == list(range(size))
        assert all(c.data.packet_count == 0 and c.data.byte_count == 0 for c in cells)
        every = await read_all(sw, fy.P4CounterEntry())
        assert len(every) == size + sw.p4info.counters["op_counter"].size
        # Counters are writable with MODIFY (set a value, read it back).
        data = fy.P4CounterData(byte_count=700, packet_count=7)
        await sw.modify([fy.P4CounterEntry("decision_counter", index=3, data=data)])
        [cell] = await read_all(sw, fy.P4CounterEntry("decision_counter", index=3))
        assert (cell.data.packet_count, cell.data.byte_count) == (7, 700)
        exc = await expect_error(
            read_all(sw, fy.P4CounterEntry("decision_counter", index=size)),
            GRPCStatusCode.OUT_OF_RANGE,
        )
        assert "out of range" in str(exc)


async def test_clone_sessions(switch):
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await sw.insert([fy.P4CloneSessionEntry(3, replicas=[(2, 0)])])
        await sw.insert([fy.P4CloneSessionEntry(4, replicas=[(1, 0), (2, 1)])])
        await expect_error(
            sw.insert([fy.P4CloneSessionEntry(3, replicas=[(1, 0)])]),
            GRPCStatusCode.ALREADY_EXISTS,
        )
        await expect_error(
            sw.insert([fy.P4CloneSessionEntry(5, replicas=[(1, 0), (1, 0)])]),
            GRPCStatusCode.INVALID_ARGUMENT,
        )
        await sw.modify([fy.P4CloneSessionEntry(3, replicas=[(1, 0)])])
        sessions = {s.session_id: s for s in await read_all(sw, fy.P4CloneSessionEntry())}
        assert sorted(sessions) == [3, 4]
        assert list(sessions[3].replicas) == [1]
        [only] = await read_all(sw, fy.P4CloneSessionEntry(4))
        assert len(only.replicas) == 2
        await sw.delete([fy.P4CloneSessionEntry(3)])
        await expect_error(sw.delete([fy.P4CloneSessionEntry(3)]), GRPCStatusCode.NOT_FOUND)
        # Multicast groups live in the same engine.
        await sw.insert([fy.P4MulticastGroupEntry(9, replicas=[1, 2])])
        [group] = await read_all(sw, fy.P4MulticastGroupEntry())
        assert group.multicast_group_id == 9 and list(group.replicas) == [1, 2]


async def test_register_entries_are_served(switch):
    # Served by the lab switch (BMv2 is not: nothing else may depend on it).
    async with fy.Switch("a", switch.address, primary_options()) as sw:
        await sw.modify([fy.P4RegisterEntry("slot_map", index=42, data=0x0102)])
        [cell] = await read_all(sw, fy.P4RegisterEntry("slot_map", index=42))
        assert cell.data == 0x0102


async def test_capabilities(switch):
    client = P4Client(switch.address, wait_for_ready=False)
    await client.open()
    try:
        reply = await client.request(p4r.CapabilitiesRequest())
        assert reply.p4runtime_api_version.startswith("1.")
    finally:
        await client.close()


def test_p4info_file_parses_as_text():
    # The committed P4Info the switch compares against is a text proto.
    text_format.Parse(p4info_path().read_text(), p4i.P4Info())
