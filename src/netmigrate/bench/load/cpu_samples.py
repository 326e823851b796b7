"""CPU readings of the lab's budgeted hosts while ``netmigrate bench load`` runs.

The demo's load generator does not know when the migration starts; it reads the lab's cgroups
(:func:`netmigrate.lab.cgroups.read_usage`) every :data:`INTERVAL_S` on CLOCK_MONOTONIC, and
``netmigrate bench report`` takes the readings nearest to the migration's start and end for the
report's CPU section (:mod:`netmigrate.bench.cpu`), so the phases are exact to one interval.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from netmigrate.bench import cpu
from netmigrate.lab import cgroups

INTERVAL_S = 0.25


class CpuSampler:
    """Readings of the lab recorded in ``run_dir`` (none when it runs without budgets)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.samples: list[dict[str, Any]] = []
        self.budgets: dict[str, Any] | None = None
        #: The budgeted host whose cgroup this process runs in (None: outside every one).
        self.harness_in: str | None = None
        state = cgroups.load(run_dir)
        if state is not None:
            self.budgets = {"period_us": state.period_us, "shares": dict(state.shares)}
            self.harness_in = next(
                (h for h in state.shares if os.getpid() in cgroups.members(state, h)), None
            )

    def take(self) -> None:
        if self.budgets is None:
            return
        usage = cgroups.read_usage(self.run_dir)
        self.samples.append(cpu.sample(usage, time.process_time(), time.monotonic()))

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.take()
            await asyncio.sleep(INTERVAL_S)

    def to_json(self) -> dict[str, Any]:
        return {"budgets": self.budgets, "harness_in": self.harness_in, "samples": self.samples}


def section(doc: dict[str, Any] | None, start: float, end: float) -> dict[str, Any] | None:
    """The report's CPU section from ``bench load``'s ``cpu`` record; the migration ran from
    ``start`` to ``end`` (CLOCK_MONOTONIC). None without readings."""
    if not doc or not doc.get("samples"):
        return None
    samples = sorted(doc["samples"], key=lambda s: s["time"])
    before = [s for s in samples if s["time"] <= start]
    after = [s for s in samples if s["time"] >= end]
    readings = {cpu.START: samples[0], cpu.END: samples[-1]}
    if before and after and before[-1] is not samples[-1]:
        readings[cpu.MIGRATION_STARTED] = before[-1]
        readings[cpu.MIGRATION_FINISHED] = after[0]
    return cpu.cpu_section(readings, doc.get("budgets"), harness_host=doc.get("harness_in"))
