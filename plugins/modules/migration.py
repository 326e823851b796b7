#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: migration
short_description: Live-migrate slots of a NetMigrate keyspace from one server to another
version_added: 0.1.0
description:
  - Moves the keys of a set of slots from the source server's Redis to the target server's
    while clients keep reading and writing through the switch. The agents do the work; this
    module is a thin wrapper of the C(netmigrate.migration) library that starts the migration
    on the source agent, waits for it and finalizes it (checks the switch's slot map against
    both agents and deletes the moved keys at the source after a grace period). Moved slots a
    restarted switch lost are written back before that check (see O(repair_switch)).
  - Idempotent. A migration is named by an id derived from keyspace, source, target and slots
    (or given with O(migration_id)). Running a finished migration again is C(ok), not
    C(changed), as long as its slots are still at the target; once another migration has
    moved some of them back, running it again moves them again as a new run whose derived id
    ends in a generation suffix (V(.2), V(.3)...). A failed or aborted migration is resumed
    from the agents' persisted progress; slots the target owns already are skipped.
  - In check mode nothing changes; the result holds the plan (which slots would move, which are
    skipped because the target owns them, which nobody owns, and how many keys).
  - Works with C(async)/C(poll). Progress samples are returned in RV(progress) and, with
    O(progress_file), the latest one is written to a JSON file while the task runs.
  - With O(state=aborted) no further slot starts; slots in flight finish, so every slot ends
    wholly at the source or wholly at the target.
  - O(target), O(keyspace) and O(slots) are required with O(state=present).
  - With O(switch), the module checks before the start that the switch has the keyspace,
    server and clone session entries, and at finalize that its slot map sends every moved slot
    to the target (RV(migration.finalize.switch_verified)); a finished migration run again is
    verified again. Without it the switch is not checked.
  - The module runs where the agents' control services (and the switch's P4Runtime service,
    when O(switch) is given) are reachable.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - netmigrate.core._agent_control
  - netmigrate.core._agent_control.source
  - netmigrate.core._agent_control.target
  - netmigrate.core._p4runtime.switch
attributes:
  check_mode:
    support: full
    details: Returns the plan; the agents and the switch are only read.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  keyspace:
    description:
      - The keyspace.
      - Required with O(state=present).
    type: dict
    suboptions:
      id:
        description:
          - Keyspace id. Defaults to O(keyspace.port).
        type: int
      address:
        description:
          - The keyspace's service address (what clients send to).
        type: str
        required: true
      port:
        description:
          - The keyspace's service UDP port.
        type: int
        required: true
  slots:
    description:
      - Slots to move, V(all) or comma-separated slots and inclusive ranges (V(0-4095,8000)).
      - Required with O(state=present).
    type: str
  migration_id:
    description:
      - Id of the migration. By default it is derived from keyspace, source, target and slots.
      - Required with O(state=aborted).
    type: str
  state:
    description:
      - V(present) runs the migration to its end (or resumes it); V(aborted) stops it after the
        slots in flight.
    type: str
    choices: [present, aborted]
    default: present
  batch:
    description:
      - Keys per copy batch.
    type: int
    default: 256
  rate:
    description:
      - Copy rate limit in keys per second; V(0) means no limit.
      - Omitted, a new migration has no limit and an unfinished one keeps its rate.
      - Given for an unfinished migration (running, failed or aborted) whose rate differs, the
        rate is changed first (a running migration paces its next wave with it); the task
        reports C(changed).
    type: int
  parallel:
    description:
      - Slots in flight at once.
    type: int
    default: 4
  grace:
    description:
      - Seconds between the end of the copy and the deletion of the moved keys at the source.
    type: float
    default: 1.0
  finalize:
    description:
      - Finalize after the copy (verify the switch, delete the moved keys at the source).
    type: bool
    default: true
  repair_switch:
    description:
      - At finalize, write moved slots that the switch lost (it restarted during the
        migration) back into its slot map from the agents' state, as
        M(netmigrate.core.slot_map) with O(netmigrate.core.slot_map#module:state=present) and
        O(netmigrate.core.slot_map#module:agents) would, before verifying it.
      - With V(false) such a switch fails the task and the moved keys stay at the source.
    type: bool
    default: true
  timeout:
    description:
      - Give up waiting after this many seconds (the migration keeps running at the agents;
        run the task again to wait for it). No limit by default.
    type: float
  progress_interval:
    description:
      - Seconds between progress samples in RV(progress).
    type: float
    default: 1.0
  progress_file:
    description:
      - Write the latest progress sample to this JSON file while the task runs (read it from
        another terminal or task during C(async) runs).
    type: path
requirements:
  - The netmigrate Python package (with grpcio and finsy) on the host that runs the module.
seealso:
  - module: netmigrate.core.migration_info
  - module: netmigrate.core.slot_map
"""

EXAMPLES = r"""
- name: Move slots 0-4095 from server 1 to server 2
  netmigrate.core.migration:
    source: {server_id: 1, control: "10.0.0.11:7000"}
    target: {server_id: 2, control: "10.0.0.12:7000"}
    keyspace: {address: 10.0.1.1, port: 50000}
    slots: 0-4095
    switch: {address: "127.0.0.1:9559", device_id: 1}
  register: moved

- name: What would move (check mode is a plan)
  netmigrate.core.migration:
    source: {server_id: 1, control: "10.0.0.11:7000"}
    target: {server_id: 2, control: "10.0.0.12:7000"}
    keyspace: {address: 10.0.1.1, port: 50000}
    slots: all
  check_mode: true
  register: plan

- name: Run a long migration in the background
  netmigrate.core.migration:
    source: {server_id: 1, control: "10.0.0.11:7000"}
    target: {server_id: 3, control: "10.0.0.13:7000"}
    keyspace: {address: 10.0.1.1, port: 50000}
    slots: 8192-16383
    progress_file: /tmp/migration-progress.json
  async: 3600
  poll: 10

- name: Stop a migration after the slots in flight
  netmigrate.core.migration:
    source: {server_id: 1, control: "10.0.0.11:7000"}
    migration_id: "{{ moved.migration.migration_id }}"
    state: aborted
"""

RETURN = r"""
migration:
  description:
    - The migration's result; without its per-slot list (see RV(slots)).
  returned: success, not in check mode
  type: dict
  contains:
    migration_id:
      description: Id of the migration.
      type: str
    state:
      description: DONE, FINALIZED, ABORTED or FAILED.
      type: str
    message:
      description: What happened.
      type: str
    slots_total:
      description: Slots asked for.
      type: int
    slots_done:
      description: Slots moved.
      type: int
    slots_skipped:
      description: Slots the target owned already.
      type: int
    slots_failed:
      description: Slots that failed.
      type: int
    keys_copied:
      description: Keys copied to the target.
      type: int
    duration:
      description: Seconds from start to end of the copy.
      type: float
    finalize:
      description:
        - What finalize did and verified; null when the migration was not finalized
          (O(finalize=false), or it ended ABORTED).
      type: dict
      contains:
        changed:
          description: Whether finalize deleted keys or wrote slots back into the switch.
          type: bool
        keys_deleted:
          description: Keys deleted at the source.
          type: int
        slots_finalized:
          description: Slots whose keys were deleted at the source by this run.
          type: int
        switch_verified:
          description:
            - True when O(switch) was given and its slot map sends every slot this migration
              moved (and the target still owns) to the target. False without O(switch).
          type: bool
        slots_reconciled:
          description: Moved slots a restarted switch had lost, written back before verifying.
          type: int
  sample:
    migration_id: ks50000-1to2-5c1e
    state: FINALIZED
    message: migration ks50000-1to2-5c1e done
    slots_total: 4096
    slots_done: 4096
    keys_copied: 5012
slots:
  description: Per-slot results of the slots that were migrated (not the skipped ones).
  returned: success, not in check mode
  type: list
  elements: dict
  sample: [{"slot": 0, "outcome": "done", "keys_copied": 3, "attempts": 1, "duration": 0.02}]
plan:
  description: In check mode, what would happen.
  returned: check mode
  type: dict
  sample: {"move": [[0, 4095]], "skipped": [], "refused": [], "slots_to_move": 4096, "keys": 5012}
progress:
  description: Progress samples taken every O(progress_interval) seconds while waiting.
  returned: success, not in check mode
  type: list
  elements: dict
  sample: [{"elapsed": 1.0, "slots_done": 1200, "slots_total": 4096, "keys_copied": 1500}]
"""

import asyncio
import json
import os
import tempfile
import time
import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmigrate.core.plugins.module_utils._agent_control import (
    agent_endpoint,
    agent_endpoint_spec,
    control_tls_spec,
)
from ansible_collections.netmigrate.core.plugins.module_utils._netmigrate import (
    fail_imports,
    optional_import,
)
from ansible_collections.netmigrate.core.plugins.module_utils._p4runtime import (
    switch_argument_spec,
    tls_options,
)

ARGUMENT_SPEC: dict[str, t.Any] = dict(
    source=agent_endpoint_spec(required=True),
    target=agent_endpoint_spec(),
    # A keyspace is a service address, not a secret (the name only looks like one).
    keyspace=dict(
        type="dict",
        no_log=False,
        options=dict(
            id=dict(type="int"),
            address=dict(type="str", required=True),
            port=dict(type="int", required=True),
        ),
    ),
    slots=dict(type="str"),
    migration_id=dict(type="str"),
    state=dict(type="str", choices=["present", "aborted"], default="present"),
    switch=switch_argument_spec(),
    control_tls=control_tls_spec(),
    batch=dict(type="int", default=256),
    rate=dict(type="int"),
    parallel=dict(type="int", default=4),
    grace=dict(type="float", default=1.0),
    finalize=dict(type="bool", default=True),
    repair_switch=dict(type="bool", default=True),
    timeout=dict(type="float"),
    progress_interval=dict(type="float", default=1.0),
    progress_file=dict(type="path"),
)

_PROGRESS_KEYS = (
    "state",
    "slots_total",
    "slots_done",
    "slots_skipped",
    "slots_failed",
    "slots_in_flight",
    "slots_pending",
    "keys_copied",
    "keys_remaining",
    "keys_per_second",
    "eta",
)


class ProgressRecorder:
    """Keeps one progress sample per interval (and the last one), optionally in a file."""

    def __init__(self, interval: float, path: str | None) -> None:
        self.interval = max(interval, 0.1)
        self.path = path
        self.samples: list[dict[str, t.Any]] = []
        self._last = -1e9
        self._latest: dict[str, t.Any] | None = None

    def __call__(self, progress: t.Any) -> None:
        sample = {"elapsed": round(progress.elapsed, 3)}
        sample.update({k: getattr(progress, k) for k in _PROGRESS_KEYS})
        self._latest = sample
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.samples.append(sample)
            self._write(sample)

    def close(self) -> None:
        if self._latest is not None and (not self.samples or self.samples[-1] is not self._latest):
            self.samples.append(self._latest)
            self._write(self._latest)

    def _write(self, sample: dict[str, t.Any]) -> None:
        if not self.path:
            return
        # Atomic: a reader never sees half a sample.
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".progress-")
        with os.fdopen(fd, "w") as f:
            json.dump(sample, f)
        os.replace(tmp, self.path)


def _slots(module: AnsibleModule, text: str) -> list[int]:
    config = optional_import("netmigrate.agent.config")
    try:
        slots = sorted(config.parse_slots(text))
    except config.ConfigError as exc:
        module.fail_json(msg=f"slots: {exc}".replace("--slots: ", ""))
    if not slots:
        module.fail_json(msg=f"slots: {text!r} selects no slot")
    return slots


def _result_doc(result: t.Any) -> tuple[dict[str, t.Any], list[dict[str, t.Any]]]:
    doc = result.to_json(slots=True)
    slots = doc.pop("slots", [])
    doc.pop("changed", None)
    return doc, slots


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[
            ("state", "present", ("target", "keyspace", "slots")),
            ("state", "aborted", ("migration_id",)),
        ],
    )
    fail_imports(module, "grpc", "netmigrate.migration", "netmigrate.agent.config")
    mig = optional_import("netmigrate.migration")
    p = module.params

    try:
        source = agent_endpoint(mig, p["source"], p["control_tls"])
        target = agent_endpoint(mig, p["target"], p["control_tls"]) if p["target"] else None
        options = mig.MigrationOptions(
            batch=p["batch"],
            rate=p["rate"],
            parallel=p["parallel"],
            grace=p["grace"],
            repair_switch=p["repair_switch"],
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if target is not None and target.server_id == source.server_id:
        module.fail_json(msg="source and target are the same server")
    keyspace = None
    if p["keyspace"]:
        ks = p["keyspace"]
        kid = ks["id"] if ks["id"] is not None else ks["port"]
        keyspace = mig.KeyspaceRef(kid, ks["address"], ks["port"])
    switch = None
    if p["switch"]:
        sw = p["switch"]
        if sw["tls"]:
            fail_imports(module, "netmigrate.p4rt")
        switch = mig.SwitchEndpoint(
            sw["address"],
            device_id=sw["device_id"],
            election_id=sw["election_id"],
            tls=tls_options(optional_import("netmigrate.p4rt"), sw),
        )

    recorder = ProgressRecorder(p["progress_interval"], p["progress_file"])
    try:
        if p["state"] == "aborted":
            if module.check_mode:
                found = asyncio.run(mig.status(source, p["migration_id"]))
                if not found:
                    module.fail_json(msg=f"no migration {p['migration_id']} at the source")
                running = found[0].state not in ("ABORTED", "DONE", "FINALIZED")
                module.exit_json(changed=running, migration=found[0].to_json(slots=False))
            result = asyncio.run(mig.abort(source, p["migration_id"], progress=recorder))
        else:
            slots = _slots(module, p["slots"])
            if module.check_mode:
                plan = asyncio.run(
                    mig.plan(
                        source,
                        target,
                        slots,
                        keyspace=keyspace,
                        switch=switch,
                        migration_id=p["migration_id"],
                    )
                )
                doc = plan.to_json()
                module.exit_json(changed=plan.changed, msg=plan.message, plan=doc)
            result = asyncio.run(
                mig.run(
                    source,
                    target,
                    slots,
                    keyspace=keyspace,
                    switch=switch,
                    options=options,
                    progress=recorder,
                    migration_id=p["migration_id"],
                    finalize=p["finalize"],
                    timeout=p["timeout"],
                )
            )
    except mig.MigrationError as exc:
        recorder.close()
        extra: dict[str, t.Any] = {"code": exc.code, "progress": recorder.samples}
        if exc.result is not None:
            extra["migration"], extra["slots"] = _result_doc(exc.result)
        module.fail_json(msg=f"migration failed ({exc.code}): {exc}", **extra)
    except (OSError, ValueError, TimeoutError) as exc:
        module.fail_json(msg=f"migration failed: {exc}", progress=recorder.samples)
    recorder.close()
    doc, slot_docs = _result_doc(result)
    module.exit_json(
        changed=result.changed,
        msg=result.message,
        migration=doc,
        slots=slot_docs,
        progress=recorder.samples,
    )


if __name__ == "__main__":
    main()
