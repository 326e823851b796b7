"""The P4 program and the committed P4Info cannot drift apart; the pipeline twin uses its names."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from finsy.proto import p4i
from google.protobuf import text_format
from p4_source import (
    P4SourceError,
    Program,
    compare,
    jenkins_one_at_a_time,
    load_program,
    read_sources,
)

from netmigrate.protocol.constants import (
    CPU_PORT,
    DECISION_COUNT,
    HEADER_LEN,
    SLOT_MAP_SIZE,
)
from netmigrate.protocol.layout import NM_LAYOUT, PACKET_IN_FIELDS, PACKET_OUT_FIELDS
from netmigrate.resources import p4_program_path, p4info_path
from netmigrate.switch.pipeline import P4INFO_NAMES


@pytest.fixture(scope="module")
def program() -> Program:
    return load_program(p4_program_path())


def committed() -> p4i.P4Info:
    return text_format.Parse(p4info_path().read_text(), p4i.P4Info())


def test_program_and_p4info_agree(program: Program) -> None:
    assert compare(program, committed()) == []


def test_the_reader_saw_the_whole_program(program: Program) -> None:
    # Guards against a reader that silently finds nothing: the counts are the program's.
    assert len(program.tables) == 5
    assert len(program.actions) == 10
    assert set(program.counters) == {
        "NetMigrateIngress.op_counter",
        "NetMigrateIngress.decision_counter",
    }
    assert program.registers["NetMigrateIngress.slot_map"].size == SLOT_MAP_SIZE
    assert program.counters["NetMigrateIngress.decision_counter"].size == DECISION_COUNT
    assert set(program.controller_headers) == {"packet_in", "packet_out"}
    assert list(program.digests) == ["slot_transition_t"]


def test_every_object_has_an_explicit_id(program: Program) -> None:
    objects = [
        *program.tables.values(),
        *program.actions.values(),
        *program.counters.values(),
        *program.registers.values(),
        *program.controller_headers.values(),
    ]
    assert all(o.id is not None and o.id >> 24 for o in objects), "ids carry the prefix byte"
    ids = [o.id for o in objects]
    assert len(ids) == len(set(ids))


def test_netmigrate_header_is_the_protocol_header(program: Program) -> None:
    fields = program.headers["nm_t"]
    assert [(f.name, f.width) for f in fields] == [(n, w) for n, _, w in NM_LAYOUT]
    assert sum(f.width for f in fields) == 8 * HEADER_LEN


def test_controller_headers_match_the_pipeline_helpers(program: Program) -> None:
    out = program.controller_headers["packet_out"].fields
    into = program.controller_headers["packet_in"].fields
    assert [(f.name, f.width) for f in out] == list(PACKET_OUT_FIELDS)
    assert [(f.name, f.width) for f in into] == list(PACKET_IN_FIELDS)
    assert program.consts["CPU_PORT"] == CPU_PORT


def test_no_protocol_number_is_spelled_outside_the_generated_include() -> None:
    include = p4_program_path().parent / "include"
    for path in [p4_program_path(), *include.glob("*.p4")]:
        if path.name == "constants.p4":
            continue
        text = read_sources(path) if path == p4_program_path() else path.read_text()
        if path != p4_program_path():
            text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
        # Literals allowed outside constants.p4: widths, 0/1, table sizes, the RFC 1624
        # arithmetic, standard Ethernet/IPv4 numbers declared as named consts in headers.p4.
        for m in re.finditer(r"(?<![\w<])(0x[0-9A-Fa-f]+|\d+)(?![\w>])", text):
            value = int(m.group(1), 0)
            line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())]
            if value in (0, 1) or re.search(r"@id\(|size = |bit<|\[\d+:\d+\]|3w", line):
                continue
            if "0xFFFF" in line and ("sum" in line):
                continue
            if re.match(
                r"\s*const bit<\d+>\s+(ETHERTYPE_IPV4|IPPROTO_UDP|IPV4_IHL_NO_OPTIONS|"
                r"PKT_INSTANCE_TYPE_INGRESS_CLONE|DIGEST_RECEIVER)\b",
                line,
            ):
                continue
            pytest.fail(f"{path.name}: literal {m.group(1)} in {line.strip()!r}")


def test_pipeline_twin_uses_p4info_names() -> None:
    info = committed()
    tables = {t.preamble.name: t for t in info.tables}
    actions = {a.preamble.name: a for a in info.actions}
    assert set(P4INFO_NAMES["tables"]) <= set(tables)
    assert set(P4INFO_NAMES["actions"]) <= set(actions)
    assert set(P4INFO_NAMES["registers"]) <= {r.preamble.name for r in info.registers}
    assert set(P4INFO_NAMES["counters"]) <= {c.preamble.name for c in info.counters}
    assert set(P4INFO_NAMES["digests"]) <= {d.preamble.name for d in info.digests}
    for table, keys in P4INFO_NAMES["match_fields"].items():
        assert tuple(m.name for m in tables[table].match_fields) == keys
    for action, params in P4INFO_NAMES["params"].items():
        assert tuple(p.name for p in actions[action].params) == params


def test_committed_digest_id_is_what_p4c_assigns() -> None:
    # v1model digests get no @id: p4c hashes the struct name (jenkins one-at-a-time, 24 bits).
    [d] = committed().digests
    assert d.preamble.id == 0x17000000 | (jenkins_one_at_a_time("slot_transition_t") & 0xFFFFFF)
    assert jenkins_one_at_a_time("a") == 0xCA2E9442  # the published test vector


# --- The checker must catch a deliberate mismatch ------------------------------------------------


def _table(info: p4i.P4Info, name: str) -> p4i.Table:
    return next(t for t in info.tables if t.preamble.name.endswith(name))


def _action(info: p4i.P4Info, name: str) -> p4i.Action:
    return next(a for a in info.actions if a.preamble.name.endswith(name))


MUTATIONS: dict[str, tuple[Callable[[p4i.P4Info], None], str]] = {
    "table id": (lambda i: setattr(_table(i, "keyspace").preamble, "id", 0x02000009), "id"),
    "action id": (lambda i: setattr(_action(i, ".drop").preamble, "id", 0x01000077), "drop"),
    "match width": (
        lambda i: setattr(_table(i, "keyspace").match_fields[1], "bitwidth", 8),
        "match fields",
    ),
    "match kind": (
        lambda i: setattr(
            _table(i, "ipv4_lpm").match_fields[0], "match_type", p4i.MatchField.EXACT
        ),
        "match fields",
    ),
    "match name": (
        lambda i: setattr(_table(i, "server_port").match_fields[0], "name", "meta.dest"),
        "match fields",
    ),
    "param width": (
        lambda i: setattr(_action(i, "ipv4_forward").params[1], "bitwidth", 16),
        "params",
    ),
    "param name": (
        lambda i: setattr(_action(i, "set_keyspace").params[2], "name", "base"),
        "params",
    ),
    "table size": (lambda i: setattr(_table(i, "sender_check"), "size", 512), "size"),
    "defaultonly": (
        lambda i: _table(i, "keyspace").action_refs[1].ClearField("scope"),
        "action refs",
    ),
    "initial default": (
        lambda i: setattr(_table(i, "ipv4_lpm").initial_default_action, "action_id", 0x01000002),
        "initial default",
    ),
    "register width": (
        lambda i: setattr(i.registers[0].type_spec.bitstring.bit, "bitwidth", 32),
        "bit<32>",
    ),
    "counter size": (lambda i: setattr(i.counters[1], "size", 8), "size"),
    "counter unit": (
        lambda i: setattr(i.counters[0].spec, "unit", p4i.CounterSpec.PACKETS),
        "unit",
    ),
    "digest member": (
        lambda i: setattr(i.type_info.structs["slot_transition_t"].members[4], "name", "tgt"),
        "members",
    ),
    "digest id": (lambda i: setattr(i.digests[0].preamble, "id", 0x17000001), "p4c assigns"),
    "controller metadata": (
        lambda i: setattr(i.controller_packet_metadata[1].metadata[1], "bitwidth", 2),
        "metadata",
    ),
    "alias": (lambda i: setattr(_table(i, "keyspace").preamble, "alias", "ks"), "alias"),
    "missing action": (lambda i: i.actions.remove(_action(i, "no_rewrite")), "not in the P4Info"),
    "extra table": (
        lambda i: i.tables.add().preamble.MergeFrom(
            p4i.Preamble(id=0x02000099, name="NetMigrateIngress.ghost", alias="ghost")
        ),
        "not in the program",
    ),
    "extra counter kind": (
        lambda i: i.meters.add().preamble.MergeFrom(p4i.Preamble(id=0x14000001, name="m")),
        "meters",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checker_reports_a_mutated_p4info(program: Program, mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    info = committed()
    mutate(info)
    problems = compare(program, info)
    assert problems, f"{mutation}: not detected"
    assert any(expected in p for p in problems), problems


def test_reader_refuses_what_it_does_not_understand(tmp_path) -> None:
    main = tmp_path / "x.p4"
    main.write_text("#include <core.p4>\n#pragma something\n")
    with pytest.raises(P4SourceError, match="preprocessor"):
        load_program(main)
    main.write_text(
        "control C(inout H hdr) {\n  table t { key = { hdr.x: exact; } actions = { a; }"
        " default_action = a(); implementation = p; }\n  apply { }\n}\n"
    )
    with pytest.raises(P4SourceError, match="unsupported properties"):
        load_program(main)
