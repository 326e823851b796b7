"""Per-host CPU budgets for the lab: one cgroup with a CPU quota per lab host (DESIGN section 8).

On a testbed every server has its own CPUs; in the lab every namespace shares the machine's.
Each lab host (the switch, every topology host, and the ``controller`` that runs Ansible and
``netmigrate migrate``) therefore gets its own cgroup ``nm-lab-<prefix>/<host>`` with a CFS
quota, so that one host never borrows another's CPU.

Two kernel interfaces are supported, detected from ``/proc/self/mountinfo``:

* cgroup v1 (this machine): the ``cpu`` hierarchy carries ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` and the ``cpuacct`` hierarchy, mounted separately here, counts usage in
  ``cpuacct.usage``. A process is written into both (a combined ``cpu,cpuacct`` mount is one);
* cgroup v2 where ``cpu`` is enabled in the unified hierarchy: ``cpu.max`` ("quota period") and
  ``cpu.stat`` ``usage_usec``.

The budgets and the cgroup paths are recorded in ``<run dir>/cpu.json``: the supervisor, the
``lab exec`` wrapper and the keeper read it to place processes, ``lab down`` to remove exactly
the cgroups it made, and reports (:func:`read_usage`) to name the budgets.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netmigrate.lab.errors import LabError

CPU_FILE = "cpu.json"
#: Budget names that are not topology hosts.
SWITCH = "switch"
CONTROLLER = "controller"
#: The kernel refuses a CFS quota below 1 ms.
MIN_QUOTA_US = 1000
#: The default CFS period, chosen by measurement (docs/decisions.md, "CPU budgets").
DEFAULT_PERIOD_US = 10_000
MIN_PERIOD_US = 1000
MAX_PERIOD_US = 1_000_000
#: Default shares of one core per role (sum 1.95 for the default five hosts plus controller,
#: within the two cores of the reference machine). Servers get the smallest share, so that the
#: source server is the bottleneck before a migration, not the client or the switch: client
#: ~18 us per request and the switch ~2 x 6-9 us (request and reply) against ~19 us per request
#: at an agent and its Redis (DESIGN section 8).
DEFAULT_SWITCH = 0.4
DEFAULT_CLIENT = 0.5
DEFAULT_SERVER = 0.25
DEFAULT_CONTROLLER = 0.3
_GROUP_ROOT = "nm-lab-{prefix}"
_HOST_RE = re.compile(r"^[a-z][a-z0-9]*$")


# --- budgets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuBudgets:
    """CPU shares (fractions of one core) per lab host, and the CFS period they share."""

    shares: Mapping[str, float]
    period_us: int = DEFAULT_PERIOD_US

    def quota_us(self, host: str) -> int:
        return round(self.shares[host] * self.period_us)

    @property
    def total(self) -> float:
        return sum(self.shares.values())

    def to_dict(self) -> dict[str, Any]:
        return {"period_us": self.period_us, "shares": dict(sorted(self.shares.items()))}


def budget_hosts(topology_hosts: Sequence[str]) -> list[str]:
    """Every name that can carry a budget: the switch, the topology's hosts, the controller."""
    return [SWITCH, *topology_hosts, CONTROLLER]


def default_budgets(topology_hosts: Sequence[str], cores: int | None = None) -> CpuBudgets:
    """DESIGN section 8's defaults: the first host is the client, the others are servers.

    Scaled down (never below the 1 ms minimum quota) when they would sum to more than the
    machine's cores.
    """
    cores = cores or os.cpu_count() or 1
    shares: dict[str, float] = {SWITCH: DEFAULT_SWITCH}
    for i, name in enumerate(topology_hosts):
        shares[name] = DEFAULT_CLIENT if i == 0 else DEFAULT_SERVER
    shares[CONTROLLER] = DEFAULT_CONTROLLER
    total = sum(shares.values())
    period = DEFAULT_PERIOD_US
    if total > cores:
        shares = {h: math.floor(f * cores / total * 1000) / 1000 for h, f in shares.items()}
        # The smallest share must still be a quota of at least 1 ms: lengthen the period.
        period = max(period, math.ceil(MIN_QUOTA_US / min(shares.values()) / 1000) * 1000)
    budgets = CpuBudgets(shares, period)
    _validate(budgets, topology_hosts, cores)
    return budgets


def parse_cpu(
    text: str | None,
    topology_hosts: Sequence[str],
    *,
    period_us: int | None = None,
    cores: int | None = None,
) -> CpuBudgets | None:
    """``--cpu``: ``off``, ``default`` (or None), or ``HOST=FRACTION,...`` over the defaults.

    ``HOST`` is a topology host, ``switch`` or ``controller``; ``FRACTION`` is a share of one
    core (``0.25``). Raises :class:`LabError` naming the bad part; nothing is changed then.
    """
    cores = cores or os.cpu_count() or 1
    spec = (text or "default").strip()
    if spec == "off":
        return None
    base = default_budgets(topology_hosts, cores)
    shares = dict(base.shares)
    period_us = period_us or base.period_us
    if spec != "default":
        known = budget_hosts(topology_hosts)
        seen: set[str] = set()
        for item in spec.split(","):
            host, sep, value = item.strip().partition("=")
            host = host.strip()
            if not sep or not host:
                raise LabError(f"--cpu: {item.strip()!r} is not HOST=FRACTION (or use 'off')")
            if host not in known:
                raise LabError(f"--cpu: unknown host {host!r} (hosts: {', '.join(known)})")
            if host in seen:
                raise LabError(f"--cpu: {host} given twice")
            seen.add(host)
            try:
                fraction = float(value)
            except ValueError:
                raise LabError(f"--cpu: {host}={value!r} is not a number of cores") from None
            if not fraction > 0 or fraction != fraction or fraction == float("inf"):
                raise LabError(f"--cpu: {host}={value} must be a positive share of a core")
            shares[host] = fraction
    budgets = CpuBudgets(shares, period_us)
    _validate(budgets, topology_hosts, cores)
    return budgets


def _validate(budgets: CpuBudgets, topology_hosts: Sequence[str], cores: int) -> None:
    for reserved in (SWITCH, CONTROLLER):
        if reserved in topology_hosts:
            raise LabError(f"a lab host may not be named {reserved!r} when CPU budgets are on")
    if not MIN_PERIOD_US <= budgets.period_us <= MAX_PERIOD_US:
        raise LabError(
            f"CPU period {budgets.period_us} us out of range {MIN_PERIOD_US}..{MAX_PERIOD_US}"
        )
    for host, fraction in budgets.shares.items():
        if not _HOST_RE.match(host):
            raise LabError(f"invalid budget host name {host!r}")
        if budgets.quota_us(host) < MIN_QUOTA_US:
            raise LabError(
                f"--cpu: {host}={fraction:g} is a quota of {budgets.quota_us(host)} us in a "
                f"{budgets.period_us} us period; the kernel's minimum is {MIN_QUOTA_US} us "
                f"(give at least {MIN_QUOTA_US / budgets.period_us:g})"
            )
        if fraction > cores:
            raise LabError(f"--cpu: {host}={fraction:g} is more than the {cores} cores here")
    if budgets.total > cores + 1e-9:
        raise LabError(
            f"--cpu: the budgets sum to {budgets.total:g} cores, more than the {cores} of this "
            "machine: hosts would borrow each other's CPU again"
        )


# --- kernel interfaces -----------------------------------------------------------------------


class Backend(Protocol):
    """One cgroup interface (v1 or v2); paths are relative to the lab's group root."""

    name: str

    def create(self, group: str, quota_us: int, period_us: int) -> None: ...
    def limit(self, group: str) -> tuple[int | None, int]: ...
    def procs_files(self, group: str) -> list[Path]: ...
    def usage_ns(self, group: str) -> int: ...
    def throttled(self, group: str) -> tuple[int, int]: ...
    def pids(self, group: str) -> list[int]: ...
    def exists(self, group: str) -> bool: ...
    def remove(self, group: str) -> None: ...
    def group_of(self, pid: int) -> str | None: ...


def _write(path: Path, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise LabError(f"cannot write {text!r} to {path}: {exc.strerror}") from exc


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except FileNotFoundError:
        return []


def _rmdir_group(root: Path, group: str, procs_name: str) -> None:
    """Move what is left in ``group`` to the hierarchy's root, then remove it (leaf first)."""
    path = root / group
    if not path.is_dir():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        _rmdir_group(root, f"{group}/{child.name}", procs_name)
    for pid in _pids(path / procs_name):
        # A process that outlived `lab down` (not ours to kill) keeps running, unbudgeted.
        with contextlib.suppress(OSError):
            _write(root / procs_name, str(pid))
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise LabError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
            time.sleep(0.02)  # a process that just exited is still being torn down
    raise LabError(f"cannot remove cgroup {path}: still busy")


def _cgroup_line(pid: int, match: Callable[[str, str], bool]) -> str | None:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if match(controllers, path):
            return path
    return None


@dataclass(slots=True)
class CgroupV1:
    cpu_root: Path
    cpuacct_root: Path | None
    name: str = "v1"

    def _roots(self) -> list[Path]:
        roots = [self.cpu_root]
        if self.cpuacct_root is not None and self.cpuacct_root != self.cpu_root:
            roots.append(self.cpuacct_root)
        return roots

    def create(self, group: str, quota_us: int, period_us: int) -> None:
        for root in self._roots():
            (root / group).mkdir(parents=True, exist_ok=True)
        path = self.cpu_root / group
        # The kernel checks quota against the current period: lower the quota first when the
        # period shrinks, so no intermediate pair is refused.
        _write(path / "cpu.cfs_quota_us", "-1")
        _write(path / "cpu.cfs_period_us", str(period_us))
        _write(path / "cpu.cfs_quota_us", str(quota_us))

    def limit(self, group: str) -> tuple[int | None, int]:
        path = self.cpu_root / group
        quota = int((path / "cpu.cfs_quota_us").read_text())
        period = int((path / "cpu.cfs_period_us").read_text())
        return (None if quota < 0 else quota), period

    def procs_files(self, group: str) -> list[Path]:
        return [root / group / "cgroup.procs" for root in self._roots()]

    def usage_ns(self, group: str) -> int:
        if self.cpuacct_root is not None:
            return int((self.cpuacct_root / group / "cpuacct.usage").read_text())
        return 0

    def throttled(self, group: str) -> tuple[int, int]:
        stat = _read_kv(self.cpu_root / group / "cpu.stat")
        return stat.get("nr_throttled", 0), stat.get("throttled_time", 0) // 1000

    def pids(self, group: str) -> list[int]:
        return _pids(self.cpu_root / group / "cgroup.procs")

    def exists(self, group: str) -> bool:
        return any((root / group).is_dir() for root in self._roots())

    def remove(self, group: str) -> None:
        for root in self._roots():
            _rmdir_group(root, group, "cgroup.procs")

    def group_of(self, pid: int) -> str | None:
        return _cgroup_line(pid, lambda ctl, _path: "cpu" in ctl.split(","))


@dataclass(slots=True)
class CgroupV2:
    root: Path
    name: str = "v2"

    def _enable_cpu(self, path: Path) -> None:
        """``+cpu`` in the subtree_control of ``path`` and of every ancestor below the root."""
        chain = [path, *path.parents]
        for p in reversed(chain):
            if p != self.root and self.root not in p.parents:
                continue
            ctl = p / "cgroup.subtree_control"
            if ctl.exists() and "cpu" not in ctl.read_text().split():
                _write(ctl, "+cpu")

    def create(self, group: str, quota_us: int, period_us: int) -> None:
        path = self.root / group
        path.mkdir(parents=True, exist_ok=True)
        self._enable_cpu(path.parent)
        _write(path / "cpu.max", f"{quota_us} {period_us}")

    def limit(self, group: str) -> tuple[int | None, int]:
        quota, period = (self.root / group / "cpu.max").read_text().split()
        return (None if quota == "max" else int(quota)), int(period)

    def procs_files(self, group: str) -> list[Path]:
        return [self.root / group / "cgroup.procs"]

    def usage_ns(self, group: str) -> int:
        return _read_kv(self.root / group / "cpu.stat").get("usage_usec", 0) * 1000

    def throttled(self, group: str) -> tuple[int, int]:
        stat = _read_kv(self.root / group / "cpu.stat")
        return stat.get("nr_throttled", 0), stat.get("throttled_usec", 0)

    def pids(self, group: str) -> list[int]:
        return _pids(self.root / group / "cgroup.procs")

    def exists(self, group: str) -> bool:
        return (self.root / group).is_dir()

    def remove(self, group: str) -> None:
        _rmdir_group(self.root, group, "cgroup.procs")

    def group_of(self, pid: int) -> str | None:
        return _cgroup_line(pid, lambda ctl, _path: ctl == "")


def _mounts(mountinfo: str) -> list[tuple[Path, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount in ``mountinfo``."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        fstype = rfields[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        opts = set(rfields[2].split(",")) if len(rfields) > 2 else set()
        out.append((Path(fields[4].replace("\\040", " ")), fstype, opts))
    return out


def detect(mountinfo: str | None = None) -> Backend:
    """The cgroup interface that carries the ``cpu`` controller here (v1 first, as it owns the
    controller when both are mounted)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    mounts = _mounts(mountinfo)
    cpu = next((m for m, t, o in mounts if t == "cgroup" and "cpu" in o), None)
    if cpu is not None:
        acct = next((m for m, t, o in mounts if t == "cgroup" and "cpuacct" in o), None)
        return CgroupV1(cpu, acct)
    for mount, fstype, _ in mounts:
        if fstype == "cgroup2":
            controllers = mount / "cgroup.controllers"
            if controllers.exists() and "cpu" in controllers.read_text().split():
                return CgroupV2(mount)
    raise LabError(
        "no cgroup cpu controller is available (cgroup v1 `cpu` or v2 `cpu.max`); "
        "run `netmigrate lab up --cpu off` for a lab without CPU budgets"
    )


def backend_from(name: str, paths: Mapping[str, str | None]) -> Backend:
    if name == "v1":
        acct = paths.get("cpuacct_root")
        return CgroupV1(Path(str(paths["cpu_root"])), Path(acct) if acct else None)
    if name == "v2":
        return CgroupV2(Path(str(paths["root"])))
    raise LabError(f"unknown cgroup backend {name!r}")


def _backend_paths(backend: Backend) -> dict[str, str | None]:
    if isinstance(backend, CgroupV1):
        acct = backend.cpuacct_root
        return {"cpu_root": str(backend.cpu_root), "cpuacct_root": str(acct) if acct else None}
    if isinstance(backend, CgroupV2):
        return {"root": str(backend.root)}
    raise LabError(f"unknown cgroup backend {backend!r}")


# --- the lab's budgets: apply, record, join, read, remove -----------------------------------


@dataclass(frozen=True, slots=True)
class LabCpu:
    """What ``cpu.json`` records: the budgets and where their cgroups are."""

    prefix: str
    backend: str
    paths: Mapping[str, str | None]
    period_us: int
    shares: Mapping[str, float]
    #: Network namespace -> budget host (the switch's namespace is the switch's).
    netns: Mapping[str, str] = field(default_factory=dict)

    @property
    def root_group(self) -> str:
        return root_group(self.prefix)

    def group(self, host: str) -> str:
        if host not in self.shares:
            raise LabError(f"no CPU budget for host {host!r} (hosts: {', '.join(self.shares)})")
        return f"{self.root_group}/{host}"

    def kernel(self) -> Backend:
        return backend_from(self.backend, self.paths)

    def host_of_netns(self, netns: str | None) -> str | None:
        return None if netns is None else self.netns.get(netns)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paths"], d["shares"], d["netns"] = dict(self.paths), dict(self.shares), dict(self.netns)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LabCpu:
        try:
            d = json.loads(text)
            return cls(
                prefix=d["prefix"],
                backend=d["backend"],
                paths=d["paths"],
                period_us=int(d["period_us"]),
                shares={k: float(v) for k, v in d["shares"].items()},
                netns=d.get("netns", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"invalid {CPU_FILE}: {exc}") from exc


def load(run_dir: Path | str) -> LabCpu | None:
    """The lab's recorded budgets, or None when it runs without (or is not up)."""
    try:
        return LabCpu.from_json((Path(run_dir) / CPU_FILE).read_text())
    except FileNotFoundError:
        return None


def apply(
    prefix: str,
    budgets: CpuBudgets,
    netns: Mapping[str, str],
    run_dir: Path | str,
    backend: Backend | None = None,
) -> tuple[LabCpu, list[str]]:
    """Create or update the cgroups of ``budgets`` and record them; (state, what changed).

    A host that lost its budget (a different ``--cpu``) has its cgroup removed.
    """
    backend = backend or detect()
    state = LabCpu(
        prefix=prefix,
        backend=backend.name,
        paths=_backend_paths(backend),
        period_us=budgets.period_us,
        shares=dict(budgets.shares),
        netns=dict(netns),
    )
    done: list[str] = []
    previous = load(run_dir)
    if previous is not None and previous.backend == state.backend:
        for host in set(previous.shares) - set(state.shares):
            previous.kernel().remove(previous.group(host))
            done.append(f"removed cgroup {previous.group(host)}")
    for host in state.shares:
        group = state.group(host)
        want = (budgets.quota_us(host), budgets.period_us)
        if backend.exists(group) and backend.limit(group) == want:
            continue
        backend.create(group, *want)
        done.append(f"cgroup {group}: {want[0]} us every {want[1]} us")
    path = Path(run_dir) / CPU_FILE
    text = state.to_json() + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        done.append(f"wrote {path}")
    return state, done


def remove(run_dir: Path | str) -> list[str]:
    """Remove every cgroup the lab recorded (processes still inside go to the root group)."""
    state = load(run_dir)
    if state is None:
        return []
    kernel = state.kernel()
    done = []
    if kernel.exists(state.root_group):
        kernel.remove(state.root_group)
        done.append(f"removed cgroup {state.root_group}")
    (Path(run_dir) / CPU_FILE).unlink(missing_ok=True)
    return done


def root_group(prefix: str) -> str:
    """The group every budget of ``prefix`` sits under (``nm-lab-<prefix>``)."""
    return _GROUP_ROOT.format(prefix=prefix)


def remove_if_empty(group: str, backend: Backend | None = None) -> bool:
    """Remove ``group`` and every group below it, in every hierarchy, if no process is in any
    of them; whether anything was removed.

    For leftovers of a run killed before it could remove its groups (SIGKILL): unlike
    :func:`remove`, a process found inside (a live run's) is neither moved nor disturbed, and
    what is recorded in a run directory does not matter (the killed run's is gone too).
    """
    backend = backend or detect()
    roots = [procs.parent for procs in backend.procs_files(group) if procs.parent.is_dir()]
    tree = [p for root in roots for p in (root, *root.rglob("*")) if p.is_dir()]
    if not tree or any(_pids(p / "cgroup.procs") for p in tree):
        return False
    for path in sorted(tree, key=lambda p: len(p.parts), reverse=True):  # leaves first
        try:
            path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return False  # a process joined meanwhile: its run keeps the rest
    return True


def join(state: LabCpu, host: str, pid: int = 0) -> None:
    """Move ``pid`` (0: the caller) into ``host``'s cgroup, in every hierarchy."""
    kernel = state.kernel()
    for procs in kernel.procs_files(state.group(host)):
        _write(procs, str(pid or os.getpid()))


#: Writes its own pid into each cgroup.procs file named by its arguments, then execs the rest.
#: A shell does the joining because a ``preexec_fn`` runs Python in the child of a process that
#: may have threads (gRPC's, in tests and the CLI), and such a child can crash before its exec:
#: the CI run that found this died in the child with a segmentation fault and no log.
_JOIN_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 126; shift; n=$((n - 1)); done; '
    'exec "$@"'
)
JOIN_ARGV0 = "netmigrate-cgroup-join"


def join_argv(state: LabCpu, host: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs in ``host``'s cgroup from its first instruction.

    The process keeps its pid through the joins (``exec``), so whoever started it can track it.
    """
    files = [str(p) for p in state.kernel().procs_files(state.group(host))]
    return ["/bin/sh", "-c", _JOIN_SCRIPT, JOIN_ARGV0, str(len(files)), *files, *argv]


def members(state: LabCpu, host: str) -> list[int]:
    return state.kernel().pids(state.group(host))


@dataclass(frozen=True, slots=True)
class HostCpu:
    """One host's budget and what it used, as a report wants it."""

    host: str
    share: float
    quota_us: int
    period_us: int
    #: CPU time used since the cgroup was made, in seconds.
    usage_s: float
    nr_throttled: int
    throttled_s: float


def read_usage(run_dir: Path | str) -> dict[str, Any] | None:
    """The lab's budgets and per-host CPU usage so far, as plain data; None without budgets.

    For reports: call it before and after a phase; the difference of ``usage_s`` divided by the
    wall time is the host's CPU use, to set against its ``share``.
    """
    state = load(run_dir)
    if state is None:
        return None
    kernel = state.kernel()
    hosts: dict[str, Any] = {}
    for host, share in sorted(state.shares.items()):
        group = state.group(host)
        if not kernel.exists(group):
            continue
        nr, throttled_us = kernel.throttled(group)
        hosts[host] = asdict(
            HostCpu(
                host=host,
                share=share,
                quota_us=round(share * state.period_us),
                period_us=state.period_us,
                usage_s=kernel.usage_ns(group) / 1e9,
                nr_throttled=nr,
                throttled_s=throttled_us / 1e6,
            )
        )
    return {
        "prefix": state.prefix,
        "backend": state.backend,
        "period_us": state.period_us,
        "cores": os.cpu_count(),
        "time": time.time(),
        "hosts": hosts,
    }


def lab_budgets(prefix: str, run_dir: Path | str | None = None) -> dict[str, Any] | None:
    """:func:`read_usage` for the lab named by ``prefix`` (default run directory)."""
    from netmigrate.lab.lab import default_run_dir

    return read_usage(run_dir if run_dir is not None else default_run_dir(prefix))


def netns_map(switch_netns: str, hosts: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Namespace -> budget host, from the topology's (host name, namespace) pairs."""
    return {switch_netns: SWITCH, **{ns: name for name, ns in hosts}}
