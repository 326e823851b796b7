"""The committed p4/include/constants.p4 is exactly what `netmigrate gen-p4-constants` writes."""

from __future__ import annotations

import argparse

from netmigrate.p4rt import gen_constants
from netmigrate.protocol import constants as c


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gen_constants.add_arguments(parser)
    ns = parser.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_committed_file_is_up_to_date() -> None:
    assert gen_constants.default_output().read_text() == gen_constants.render()
    assert gen_constants.run(_args(check=True)) == 0


def test_check_fails_on_a_stale_or_missing_file(tmp_path, capsys) -> None:
    path = tmp_path / "constants.p4"
    assert gen_constants.run(_args(check=True, output=path)) == 1
    assert "missing" in capsys.readouterr().err
    path.write_text(gen_constants.render().replace("OP_GET = 0x01", "OP_GET = 0x09"))
    assert gen_constants.run(_args(check=True, output=path)) == 1
    err = capsys.readouterr().err
    assert "stale" in err
    assert any(line.startswith("-") and "OP_GET = 0x09;" in line for line in err.splitlines())
    assert path.read_text().count("0x09") == 1  # --check writes nothing


def test_write_then_check(tmp_path) -> None:
    path = tmp_path / "sub" / "constants.p4"
    assert gen_constants.run(_args(output=path)) == 0
    assert gen_constants.run(_args(check=True, output=path)) == 0


def test_every_protocol_constant_is_generated() -> None:
    text = gen_constants.render()
    for op in c.Op:
        assert f"const bit<8> OP_{op.name} = 0x{op.value:02X};" in text
    for flag in (c.Flag.DOUBLE_READ, c.Flag.TO_TARGET, c.Flag.RETRY):
        assert f"const bit<8> FLAG_{flag.name} = 0x{flag.value:02X};" in text
    for status in c.Status:
        assert f"const bit<8> STATUS_{status.name} = {status.value};" in text
    for decision in c.Decision:
        assert f"const bit<32> DECISION_{decision.name} = {decision.value};" in text
    for name, width, value in [
        ("SERVICE_PORT_BASE", 16, c.SERVICE_PORT_BASE),
        ("CPU_PORT", 9, c.CPU_PORT),
        ("SLOT_COUNT", 16, c.SLOT_COUNT),
        ("SLOT_MAP_SIZE", 32, c.SLOT_MAP_SIZE),
        ("DECISION_COUNT", 32, c.DECISION_COUNT),
        ("PACKET_IN_REASON_SLOT_MAP", 7, c.PACKET_IN_REASON_SLOT_MAP),
        ("NM_HEADER_LEN", 32, c.HEADER_LEN),
    ]:
        assert f"const bit<{width}> {name} = {value};" in text
    assert f"SERVICE_PORT_MASK = 0x{c.SERVICE_PORT_MASK:04X};" in text
    assert f"CLONE = 8w{c.CLONE_FIELD_LIST}" in text
    for op in c.READ_OPS:
        assert f"op == OP_{op.name}" in text.split("nm_is_read_op")[1].split("}")[0]
    for op in c.WRITE_OPS:
        assert f"op == OP_{op.name}" in text.split("nm_is_write_op")[1].split("}")[0]


def test_values_that_do_not_fit_are_refused() -> None:
    try:
        gen_constants._const(8, "X", 256)
    except ValueError as exc:
        assert "bit<8>" in str(exc)
    else:
        raise AssertionError("256 accepted as bit<8>")


def test_command_line(tmp_path) -> None:
    from netmigrate.cli import main

    path = tmp_path / "c.p4"
    assert main(["gen-p4-constants", "--output", str(path)]) == 0
    assert main(["gen-p4-constants", "--check", "--output", str(path)]) == 0
