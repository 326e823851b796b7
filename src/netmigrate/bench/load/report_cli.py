"""``netmigrate bench report``: load run + migration result -> report.json, a PNG and a summary.

    netmigrate bench report --load out/load --migration out/migration.json --out reports/demo

``--load`` is the directory ``netmigrate bench load --out`` wrote (or its load.json); the migration
file is the JSON ``netmigrate migrate`` prints (a MigrationResult). Exit 1 when the checker
found a violation or an operation failed with a non-retryable error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netmigrate.bench.load import LOAD_FILE
from netmigrate.bench.report import ReportError, migration_under_load, summary_lines, write_json

REPORT_FILE = "report.json"
PLOT_FILE = "migration-under-load.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--load", type=Path, required=True, help="netmigrate bench load's output")
    p.add_argument("--migration", type=Path, required=True, help="migration result JSON")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--no-plot", action="store_true")


def _read(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{what}: no such file {path}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{what}: {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{what}: {path} is not a JSON object")
    return doc


def run(args: argparse.Namespace) -> int:
    load_path = args.load / LOAD_FILE if args.load.is_dir() else args.load
    try:
        load = _read(load_path, "--load")
        mig = _read(args.migration, "--migration")
        # `netmigrate migrate` may wrap the result: {"result": {...}}.
        mig = mig.get("result", mig) if isinstance(mig.get("result"), dict) else mig
        report = migration_under_load(load, mig)
    except (ReportError, KeyError) as exc:
        print(f"netmigrate bench report: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        from netmigrate.bench.plots import plot_run

        report["plot"] = str(plot_run(report["runs"][0], args.out / PLOT_FILE))
    write_json(report, args.out / REPORT_FILE)
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out / REPORT_FILE}")
    bad = not report["checker"]["ok"] or load["errors_total"]["non_retryable"] > 0
    return 1 if bad else 0
