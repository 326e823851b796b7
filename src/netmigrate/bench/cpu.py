"""The report's CPU section: each role's CPU use against its budget, per phase.

A system that runs its processes in CPU-budgeted cgroups (:mod:`netmigrate.lab.cgroups`)
returns :func:`netmigrate.lab.cgroups.read_usage`'s readings from ``System.cpu_usage``. The
runner takes one reading when the run phase starts, one when the migration starts and ends
(the observer's ``started`` / ``finished``) and one at the end; :func:`cpu_section` turns the
differences into, per role and phase, the CPU seconds used, the share of the budget that is
(``used_pct``: 100 means the role ran into its quota all phase long) and the time the kernel
throttled it, so a reader sees which resource saturated. The load generator (the harness
process) is reported too, as role ``harness``, against the budget of the cgroup it runs in, or
against one core when it runs unbudgeted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: A role that used at least this share of its budget in a phase counts as saturated there.
SATURATED_PCT = 90.0
#: Name of the load generator's pseudo-role.
HARNESS = "harness"
#: Boundaries of the run phase, in the order the runner records them, and the phases between.
START, MIGRATION_STARTED, MIGRATION_FINISHED, END = "start", "started", "finished", "end"
_PHASES = (("before", START, MIGRATION_STARTED), ("during", MIGRATION_STARTED, MIGRATION_FINISHED),
           ("after", MIGRATION_FINISHED, END))  # fmt: skip


@dataclass(frozen=True, slots=True)
class RoleUse:
    """One role's CPU over one phase."""

    wall_s: float
    usage_s: float
    #: Budget in cores (None: the role has none; then ``used_pct`` is against one core).
    share: float | None
    #: CPU used over the budget's CPU for the phase's wall time, in percent.
    used_pct: float | None
    throttled_s: float
    nr_throttled: int


def sample(usage: Mapping[str, Any] | None, harness_cpu_s: float, wall_time: float) -> dict:
    """One reading: the system's cgroup usage (or None) and the harness's own CPU seconds."""
    return {
        "time": wall_time,
        "hosts": dict(usage["hosts"]) if usage else {},
        "harness_s": harness_cpu_s,
    }


def _delta(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> float:
    return float(b.get(key, 0)) - float(a.get(key, 0))


def _use(usage_s: float, wall_s: float, share: float | None, thr_s: float, nr: int) -> RoleUse:
    budget = (share if share is not None else 1.0) * wall_s
    return RoleUse(
        wall_s=round(wall_s, 3),
        usage_s=round(usage_s, 3),
        share=share,
        used_pct=round(100 * usage_s / budget, 1) if budget > 0 else None,
        throttled_s=round(thr_s, 3),
        nr_throttled=nr,
    )


def _phase_use(
    a: Mapping[str, Any], b: Mapping[str, Any], harness_host: str | None
) -> dict[str, RoleUse]:
    wall = float(b["time"]) - float(a["time"])
    out: dict[str, RoleUse] = {}
    for host, hb in sorted(b["hosts"].items()):
        ha = a["hosts"].get(host)
        if ha is None:
            continue
        out[host] = _use(
            _delta(ha, hb, "usage_s"),
            wall,
            float(hb["share"]),
            _delta(ha, hb, "throttled_s"),
            int(_delta(ha, hb, "nr_throttled")),
        )
    if harness_host is None:
        out[HARNESS] = _use(_delta(a, b, "harness_s"), wall, None, 0.0, 0)
    return out


def cpu_section(
    readings: Mapping[str, Mapping[str, Any]],
    budgets: Mapping[str, Any] | None,
    *,
    harness_host: str | None = None,
) -> dict[str, Any]:
    """The report's ``cpu`` section from the readings at :data:`START` .. :data:`END`.

    ``budgets`` is what the system ran with (``{"period_us", "shares"}``, None: no budgets);
    ``harness_host`` names the budgeted role whose cgroup the harness process runs in (its use
    is then part of that role's), None when it runs outside every cgroup. A migration that
    never started or finished leaves its boundaries out: the phases merge accordingly.
    """
    marks = [m for m in (START, MIGRATION_STARTED, MIGRATION_FINISHED, END) if m in readings]
    phases: dict[str, dict[str, RoleUse]] = {}
    if START in readings and END in readings:
        for name, first, last in _PHASES:
            if first in readings and last in readings:
                phases[name] = _phase_use(readings[first], readings[last], harness_host)
        if not phases:
            phases["run"] = _phase_use(readings[START], readings[END], harness_host)
    roles: dict[str, dict[str, Any]] = {}
    for phase, uses in phases.items():
        for role, use in uses.items():
            roles.setdefault(role, {"share": use.share, "phases": {}})["phases"][phase] = asdict(
                use
            )
    return {
        "budgets": dict(budgets) if budgets else None,
        "harness_in": harness_host,
        "marks": marks,
        "roles": roles,
        "saturated": saturated(roles),
    }


def saturated(roles: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``role phase`` for every role that used >= :data:`SATURATED_PCT` of its budget."""
    out = []
    for role, r in roles.items():
        for phase, use in r["phases"].items():
            pct = use.get("used_pct")
            if pct is not None and pct >= SATURATED_PCT:
                out.append(f"{role} {phase}")
    return out


def summary(cpu: Mapping[str, Any] | None, phases: Sequence[str] = ("before", "during")) -> str:
    """One table cell: ``role used%/budget`` for the busiest roles of the given phases."""
    if not cpu or not cpu.get("roles"):
        return "-"
    parts = []
    for role, r in sorted(cpu["roles"].items()):
        pcts = [
            r["phases"][p]["used_pct"]
            for p in phases
            if p in r["phases"] and r["phases"][p]["used_pct"] is not None
        ]
        if not pcts:
            continue
        budget = "1 core" if r["share"] is None else f"{r['share']:g}"
        parts.append(f"{role} {'/'.join(f'{p:.0f}' for p in pcts)}% of {budget}")
    return "; ".join(parts) if parts else "-"
