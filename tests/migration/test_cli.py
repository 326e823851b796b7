"""`netmigrate migrate` as a real subprocess against real agents."""

from __future__ import annotations

import asyncio
import json
import sys

from migration_helpers import keys_in, until

from netmigrate.agent.slots import SlotState
from netmigrate.migration.cli import ProgressBar
from netmigrate.migration.model import Progress


async def migrate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "netmigrate.cli",
        "migrate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:  # a failed or cancelled test leaves no `migrate` behind
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


def request_args(p, slots: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Keyspace, source, target and slots of the pair, as ``netmigrate migrate`` takes them."""
    return [
        "--keyspace",
        f"{p.keyspace.address}:{p.keyspace.port}",
        "--keyspace-id",
        str(p.keyspace.keyspace_id),
        "--source",
        f"1={p.source_ep.control}",
        "--target",
        f"2={p.target_ep.control}",
        "--slots",
        slots,
    ]


async def test_check_run_rerun_and_status(pair) -> None:
    p = await pair()
    ra = p.redis_a.client()
    for k in keys_in(20, 8) + keys_in(21, 8):
        ra.set(k, b"v")
    common = request_args(p, "20-21")
    code, out, err = await migrate(*common, "--check")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["slots_to_move"] == 2 and plan["keys"] == 16 and plan["changed"]
    assert p.source.table.state(20) == SlotState.OWNED

    code, out, err = await migrate(*common, "--parallel", "2", "--batch", "3", "--grace", "0")
    assert code == 0, err
    result = json.loads(out)
    assert result["state"] == "FINALIZED" and result["changed"] and result["keys_copied"] == 16
    assert [s["slot"] for s in result["slots"]] == [20, 21]
    assert result["finalize"]["keys_deleted"] == 16
    assert "2/2 slots" in err  # the progress line (stderr is not a terminal here)
    assert p.target.table.state(21) == SlotState.OWNED

    code, out, err = await migrate(*common)
    assert code == 0 and not json.loads(out)["changed"]

    code, out, err = await migrate(
        "--keyspace", "127.0.0.1:1", "--source", f"1={p.source_ep.control}", "--status"
    )
    assert code == 0
    (listed,) = json.loads(out)
    assert listed["migration_id"] == result["migration_id"] and listed["state"] == "FINALIZED"


async def test_bad_arguments_exit_2_and_change_nothing(pair) -> None:
    p = await pair()
    base = ["--keyspace", "127.0.0.1:50000", "--source", f"1={p.source_ep.control}"]
    for extra, message in (
        (["--target", f"2={p.target_ep.control}", "--slots", "0-99999"], "within 0-16383"),
        (["--slots", "1"], "--target is required"),
        (["--target", "two=1.2.3.4:5", "--slots", "1"], "--target"),
        (["--target", f"2={p.target_ep.control}", "--slots", "1", "--parallel", "0"], "parallel"),
    ):
        code, out, err = await migrate(*base, *extra)
        assert code == 2, (extra, err)
        assert message in err and out == ""
    assert p.source.table.state(1) == SlotState.OWNED


async def test_abort_set_rate_and_resume_act_on_the_latest_run(pair) -> None:
    """--abort, --set-rate and --resume without --migration-id find the migration the
    arguments derive (its latest run); --resume --rate gives it a new rate first."""
    p = await pair()
    common = [*request_args(p, "3000-3999"), "--quiet"]
    run = asyncio.create_task(migrate(*common, "--rate", "20", "--parallel", "8"))
    await until(lambda: bool(p.source.source and p.source.source.all()))
    code, out, err = await migrate(*common, "--set-rate", "10")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["changed"] and p.source.source.all()[0].record.rate_keys_per_second == 10
    code, out, err = await migrate(*common, "--abort")
    assert code == 0 and json.loads(out)["state"] == "ABORTED", err
    code, out, _ = await run  # the run that was aborted did not finish: exit status 1
    assert code == 1 and json.loads(out)["state"] == "ABORTED"

    code, out, err = await migrate(*common, "--resume", "--rate", "0")
    assert code == 0, err
    assert json.loads(out)["state"] == "DONE"
    (m,) = p.source.source.all()
    assert m.record.rate_keys_per_second == 0
    assert all(p.target.table.state(s) == SlotState.OWNED for s in range(3000, 4000))
    code, out, err = await migrate(*common, "--set-rate", "-1")
    assert code == 2 and "rate must be >= 0" in err


def test_progress_line() -> None:
    p = Progress("m", "RUNNING", 10, 4, 2, 0, 2, 2, 500, 1500, 3.0, 250.0, 6.0)
    line = ProgressBar.line(p, width=8)
    assert line.startswith("[####....] 4/8 slots 2 in flight 500 keys 250 keys/s ETA 00:06")


def test_switch_tls_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import argparse

    import pytest

    from netmigrate.migration.cli import UsageError, _switch_tls, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    files = [str(tmp_path / n) for n in ("ca.pem", "c.pem", "c.key")]
    base = ["--keyspace", "10.0.1.1:50000", "--switch", "unix:/run/x.sock"]
    flags = ["--switch-tls-ca", files[0], "--switch-tls-cert", files[1]]
    args = parser.parse_args([*base, *flags, "--switch-tls-key", files[2]])
    tls = _switch_tls(args)
    assert (str(tls.ca), str(tls.cert), str(tls.key)) == tuple(files)
    assert _switch_tls(parser.parse_args(base)) is None
    with pytest.raises(UsageError, match="--switch-tls-cert and --switch-tls-key go together"):
        _switch_tls(
            parser.parse_args([*base, "--switch-tls-ca", files[0], "--switch-tls-cert", files[1]])
        )
    with pytest.raises(UsageError, match="no such file"):
        _switch_tls(parser.parse_args([*base, "--switch-tls-ca", str(tmp_path / "missing")]))
