"""``netmigrate migrate``: move slots between agents, with a progress bar and a JSON result.

::

    netmigrate migrate --switch 127.0.0.1:9559 --keyspace 10.0.0.100:50000 \\
        --source 1=10.0.0.1:7000 --target 2=10.0.0.2:7000 --slots 0-8191 [--parallel 4]

Actions: run (default), ``--check`` (plan only, nothing changes), ``--status``, ``--abort``,
``--resume``, ``--reconcile`` (rebuild the switch's slot map from ``--source``, ``--target``
and every ``--agent``). The result is JSON on stdout; progress goes to stderr (a live bar on a
terminal, a line every few seconds otherwise). Exit status: 0 done (or nothing to do), 1 the
migration failed or was refused, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from netmigrate.agent.channel import tls_from_files
from netmigrate.migration import controller
from netmigrate.migration.connections import connections
from netmigrate.migration.model import (
    AgentEndpoint,
    ControlTls,
    KeyspaceRef,
    MigrationError,
    MigrationOptions,
    Progress,
    SwitchEndpoint,
)
from netmigrate.netns import current_netns


class UsageError(ValueError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--switch", metavar="HOST:PORT", help="P4Runtime address of the switch")
    p.add_argument("--device-id", type=int, default=1, help="P4Runtime device id (BMv2: 0)")
    p.add_argument("--election-id", type=int, default=10, help="P4Runtime election id")
    p.add_argument(
        "--keyspace",
        required=True,
        metavar="HOST:PORT",
        help="the keyspace's service address (on the switch)",
    )
    p.add_argument(
        "--keyspace-id", type=int, metavar="N", help="keyspace id (default: the service port)"
    )
    p.add_argument("--source", metavar="ID=HOST:PORT", help="source server id = its control API")
    p.add_argument("--target", metavar="ID=HOST:PORT", help="target server id = its control API")
    p.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="ID=HOST:PORT",
        help="another agent of the keyspace (for --reconcile); repeatable",
    )
    p.add_argument("--slots", metavar="RANGES", help="slots to move: 0-16383, 5,7-9, all")
    p.add_argument(
        "--migration-id", help="name of the migration (default: derived from the request)"
    )
    p.add_argument("--batch", type=int, default=256, help="keys per copy batch (default 256)")
    p.add_argument(
        "--rate",
        type=int,
        help="copy rate limit, keys/s (0: none; default: none for a new migration, unchanged "
        "for one that exists). Given with a running migration, or with --resume, it changes "
        "that migration's rate",
    )
    p.add_argument("--parallel", type=int, default=4, help="slots in flight at once (default 4)")
    p.add_argument(
        "--grace", type=float, default=1.0, help="seconds before moved keys are deleted (default 1)"
    )
    p.add_argument("--no-finalize", action="store_true", help="keep the moved keys at the source")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="plan only: change nothing")
    action.add_argument("--status", action="store_true", help="show the migration's status")
    action.add_argument("--abort", action="store_true", help="start no further slot, then stop")
    action.add_argument("--resume", action="store_true", help="continue an interrupted migration")
    action.add_argument(
        "--set-rate",
        type=int,
        metavar="KEYS_PER_S",
        help="change the rate limit of the migration (running or not; 0: none), then exit",
    )
    action.add_argument(
        "--reconcile", action="store_true", help="rebuild the switch's slot map from the agents"
    )
    p.add_argument(
        "--control-tls-ca", metavar="PEM", help="verify agents' control TLS with this CA"
    )
    p.add_argument("--control-tls-cert", metavar="PEM", help="client certificate for agents")
    p.add_argument("--control-tls-key", metavar="PEM", help="client key for agents")
    p.add_argument(
        "--switch-tls-ca",
        metavar="PEM",
        help="P4Runtime over TLS, verifying the switch with this CA",
    )
    p.add_argument("--switch-tls-cert", metavar="PEM", help="client certificate for the switch")
    p.add_argument("--switch-tls-key", metavar="PEM", help="client key for the switch")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _agent(text: str | None, what: str, tls: ControlTls | None) -> AgentEndpoint:
    if not text:
        raise UsageError(f"{what} is required (ID=HOST:PORT)")
    sid, sep, control = text.partition("=")
    if not sep:
        raise UsageError(f"{what}: expected ID=HOST:PORT, got {text!r}")
    try:
        return AgentEndpoint(int(sid), control, tls=tls)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def _slots(text: str | None) -> list[int]:
    from netmigrate.agent.config import ConfigError, parse_slots

    if not text:
        raise UsageError("--slots is required")
    try:
        slots = sorted(parse_slots(text))
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if not slots:
        raise UsageError("--slots selects no slot")
    return slots


def _keyspace(args: argparse.Namespace) -> KeyspaceRef:
    host, sep, port = args.keyspace.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--keyspace: expected HOST:PORT, got {args.keyspace!r}")
    kid = args.keyspace_id if args.keyspace_id is not None else int(port)
    if not 0 <= kid <= 0xFFFF:
        raise UsageError("--keyspace-id out of range 0..65535")
    return KeyspaceRef(kid, host.strip("[]"), int(port))


def _tls_files(files: tuple[str | None, ...], flags: tuple[str, str, str]) -> ControlTls | None:
    """A CA, a certificate and its key, together or not at all; every file must exist."""
    try:
        tls = tls_from_files(*files, flags=flags)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for f in files:
        if f and not Path(f).is_file():
            raise UsageError(f"no such file {f}")
    return tls


def _tls(args: argparse.Namespace) -> ControlTls | None:
    return _tls_files(
        (args.control_tls_ca, args.control_tls_cert, args.control_tls_key),
        ("--control-tls-ca", "--control-tls-cert", "--control-tls-key"),
    )


def _switch_tls(args: argparse.Namespace) -> Any:
    """``netmigrate.p4rt.TlsOptions`` for the switch (None: plain text); the same rules as the
    agents' files."""
    tls = _tls_files(
        (args.switch_tls_ca, args.switch_tls_cert, args.switch_tls_key),
        ("--switch-tls-ca", "--switch-tls-cert", "--switch-tls-key"),
    )
    if tls is None:
        return None
    from netmigrate.p4rt.session import TlsOptions

    return TlsOptions(ca=tls.ca, cert=tls.cert, key=tls.key)


class ProgressBar:
    """Slots done / total, keys/s and ETA on stderr: redrawn in place on a terminal, a plain
    line every ``interval`` seconds otherwise."""

    def __init__(self, stream: TextIO, *, interval: float = 5.0, width: int = 30) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self.width = width
        self._last = 0.0
        self._drawn = False

    @staticmethod
    def line(p: Progress, width: int = 30) -> str:
        total = max(p.slots_total - p.slots_skipped, 1)
        done = min(p.slots_done, total)
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        eta = "--:--" if p.eta is None else time.strftime("%M:%S", time.gmtime(p.eta))
        if p.eta is not None and p.eta >= 3600:
            eta = f"{p.eta / 3600:.1f} h"
        extra = f" {p.slots_failed} failed" if p.slots_failed else ""
        return (
            f"[{bar}] {done}/{total} slots {p.slots_in_flight} in flight{extra} "
            f"{p.keys_copied} keys {p.keys_per_second:,.0f} keys/s ETA {eta} {p.state.lower()}"
        )

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        finished = p.state not in ("RUNNING", "ABORTING")
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(p, self.width))
            self._drawn = True
        elif finished or now - self._last >= self.interval:
            self.stream.write(self.line(p, self.width) + "\n")
            self._last = now
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


async def _main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # One command, one channel per agent and one switch session, however many calls it makes
    # (--abort without --migration-id looks the id up, aborts, then waits).
    async with connections():
        return await _act(args, out, err)


async def _act(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    tls = _tls(args)
    keyspace = _keyspace(args)
    switch_tls = _switch_tls(args)
    switch = (
        SwitchEndpoint(
            args.switch, device_id=args.device_id, election_id=args.election_id, tls=switch_tls
        )
        if args.switch
        else None
    )
    bar = None if args.quiet else ProgressBar(err)
    result: Any
    try:
        if args.reconcile:
            agents = [_agent(a, "--agent", tls) for a in args.agent]
            for name in ("source", "target"):
                if getattr(args, name):
                    agents.append(_agent(getattr(args, name), f"--{name}", tls))
            if not agents or switch is None:
                raise UsageError("--reconcile needs --switch and at least one agent")
            result = (await controller.reconcile(switch, keyspace, agents)).to_json()
            print(json.dumps(result, indent=2, sort_keys=True), file=out)
            return 0
        source = _agent(args.source, "--source", tls)
        if args.status:
            found = await controller.status(source, args.migration_id, include_slots=True)
            print(json.dumps([r.to_json() for r in found], indent=2), file=out)
            return 0
        if args.abort or args.resume or args.set_rate is not None:
            mid = args.migration_id
            if mid is None:
                target = _agent(args.target, "--target", tls)
                mid = await controller.current_migration_id(
                    source, keyspace, target, _slots(args.slots)
                )
            if args.set_rate is not None:
                res = await controller.set_rate(source, mid, args.set_rate)
                print(json.dumps(res.to_json(), indent=2), file=out)
                return 0
            if args.abort:
                res = await controller.abort(source, mid, progress=bar)
            else:
                res = await controller.resume(
                    source, mid, progress=bar, options=MigrationOptions(rate=args.rate)
                )
            print(json.dumps(res.to_json(), indent=2), file=out)
            return 0 if res.state in ("DONE", "FINALIZED", "ABORTED") else 1
        target = _agent(args.target, "--target", tls)
        slots = _slots(args.slots)
        options = MigrationOptions(
            batch=args.batch, rate=args.rate, parallel=args.parallel, grace=args.grace
        )
        if args.check:
            planned = await controller.plan(
                source,
                target,
                slots,
                keyspace=keyspace,
                switch=switch,
                migration_id=args.migration_id,
            )
            print(json.dumps(planned.to_json(), indent=2), file=out)
            return 1 if planned.refused else 0
        res = await controller.run(
            source,
            target,
            slots,
            keyspace=keyspace,
            switch=switch,
            options=options,
            progress=bar,
            migration_id=args.migration_id,
            finalize=not args.no_finalize,
            timeout=args.timeout,
        )
        print(json.dumps(res.to_json(), indent=2), file=out)
        return 0 if res.state in ("DONE", "FINALIZED") else 1
    except MigrationError as e:
        if bar is not None:
            bar.close()  # before the message, so it starts on its own line
        doc: dict[str, Any] = {"error": str(e), "code": e.code}
        if e.result is not None:
            doc["result"] = e.result.to_json()
        print(json.dumps(doc, indent=2), file=out)
        print(f"netmigrate migrate: {e}", file=err)
        hint = _where_to_run(e)
        if hint:
            print(f"netmigrate migrate: {hint}", file=err)
        return 1
    finally:
        if bar is not None:
            bar.close()


def _where_to_run(error: MigrationError) -> str:
    """Why an agent or the switch may be out of reach from here: the lab's P4Runtime server and
    agent control ports listen on 127.0.0.1 of the root namespace, which a lab host (a network
    namespace) cannot reach."""
    if error.code != "UNAVAILABLE":
        return ""
    here = current_netns()
    if not here:
        return ""
    return (
        f"this process runs in network namespace {here!r}; the lab's P4Runtime server and the "
        "agents' control services listen on 127.0.0.1 of the root namespace: run netmigrate "
        "migrate there (for the lab's controller budget: netmigrate lab exec controller -- "
        "netmigrate migrate ...)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args, sys.stdout, sys.stderr))
    except (UsageError, ValueError) as e:
        print(f"netmigrate migrate: {e}", file=sys.stderr)
        return 2
