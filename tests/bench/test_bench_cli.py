"""``netmigrate bench``: argument errors, unavailable systems, compare from a report."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from bench_memsystem import MemorySystem

from netmigrate.bench import system as system_mod
from netmigrate.bench.cli import NETMIGRATE_OPTIONS, REFERENCE_SYSTEMS
from netmigrate.bench.report import new_report, write_json
from netmigrate.bench.runner import RunConfig, run_system
from netmigrate.bench.system import SystemUnavailable, create_system, register_system
from netmigrate.cli import main


def test_netmigrate_system_is_registered_and_landed(capsys) -> None:
    # The lazy entry resolves to the real system (no "not landed" hint is left).
    assert importlib.util.find_spec("netmigrate.bench.peers.netmigrate") is not None
    assert "netmigrate" in system_mod.system_names()
    system = create_system("netmigrate")
    assert type(system).__name__ == "NetMigrateSystem"
    assert system.name == "netmigrate"
    assert (system.source, system.target) == ("redis1", "redis2")
    assert "netmigrate" in REFERENCE_SYSTEMS
    # Its knobs are on the command line; the help texts name the system's real defaults.
    from netmigrate.bench.peers import netmigrate as nm

    helps = {key: text for _, key, _, text in NETMIGRATE_OPTIONS}
    assert f"(default {nm.DEFAULT_PARALLEL})" in helps["netmigrate_parallel"]
    assert f"(default {nm.DEFAULT_BATCH})" in helps["netmigrate_batch"]
    assert f"(default {nm.DEFAULT_RATE})" in helps["netmigrate_rate"]
    assert f"(default {nm.DEFAULT_GRACE})" in helps["netmigrate_grace"]
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "--netmigrate-rate", "-1"])
    assert e.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_missing_provider_module_is_unavailable(monkeypatch) -> None:
    monkeypatch.setitem(system_mod._LAZY_SYSTEMS, "ghost", "netmigrate.no_such_module:Ghost")
    with pytest.raises(SystemUnavailable, match="ghost"):
        create_system("ghost")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--system", "nope"], "unknown system 'nope'"),
        (["--workload", "E"], "unknown workload 'E'"),
        (["--migrate-fraction", "0"], "migrate fraction"),
        (["--migrate-at", "40", "--duration", "30"], "within the run"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert main(["bench", "run", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_argparse_rejects_non_positive_numbers(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "--records", "0"])
    assert e.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_compare_rebuilds_table_and_plots(tmp_path: Path, capsys) -> None:
    cfg = RunConfig(workload="B", records=500, value_size=32, concurrency=2, duration_s=0.6,
                    migrate_at_s=0.2, min_after_s=0.2)  # fmt: skip
    report = new_report({"records": 500}, argv=["run"])
    report["runs"].append(asyncio.run(run_system(MemorySystem(), cfg)))
    write_json(report, tmp_path / "in" / "report.json")
    out = tmp_path / "cmp"
    assert main(["bench", "compare", str(tmp_path / "in"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("workload") and "memory" in text
    md = (out / "table.md").read_text()
    assert md.startswith("| workload | system |")
    assert (out / "plots" / "B-memory.png").stat().st_size > 10_000
    assert (out / "plots" / "B-compare.png").stat().st_size > 10_000
    assert main(["bench", "compare", str(tmp_path / "missing.json")]) == 2


def test_registered_systems_appear_in_the_registry(monkeypatch) -> None:
    monkeypatch.setattr(system_mod, "_FACTORIES", {})
    register_system("memory", MemorySystem)
    assert "memory" in system_mod.system_names()
    assert isinstance(create_system("memory"), MemorySystem)
