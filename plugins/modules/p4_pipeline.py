#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: p4_pipeline
short_description: Install or verify a P4 pipeline on a P4Runtime target
version_added: 0.1.0
description:
  - Makes a P4 program (its P4Info and the target's device config) the forwarding pipeline of
    a P4Runtime target, such as the NetMigrate lab switch, BMv2 C(simple_switch_grpc) or a
    Tofino switch.
  - Idempotent by cookie. The cookie is the first 8 bytes of SHA-256 over the P4Info and the
    device config; the switch keeps it with the pipeline. The module asks the switch for its
    cookie only (C(GetForwardingPipelineConfig) with C(COOKIE_ONLY)) and commits
    (C(VERIFY_AND_COMMIT)) only when the cookies differ.
  - In check mode the switch validates the config with the C(VERIFY) action and nothing is
    committed, so a config the target would refuse fails in check mode too.
  - Committing a pipeline clears the switch's table entries, clone sessions and registers.
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - netmigrate.core._p4runtime
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The switch verifies the config (action C(VERIFY)); nothing is committed.
  diff_mode:
    support: full
    details: Shows the pipeline cookie before and after.
  platform:
    platforms: posix
options:
  p4info:
    description:
      - Path of the P4Info file in protobuf text format (C(p4c --p4runtime-files x.p4info.txtpb)).
      - Read on the managed host.
    type: path
    required: true
  device_config:
    description:
      - Path of the target-specific device config, for example BMv2's JSON
        (C(p4c --target bmv2 --arch v1model)) or Tofino's packed binary.
      - The lab switch stores any bytes, so any file works there. Without it, the device config
        is empty.
    type: path
  state:
    description:
      - V(present) installs the pipeline unless the switch already runs it.
      - V(verified) changes nothing; it fails unless the switch already runs exactly this
        pipeline (same cookie), and has the switch validate the config with C(VERIFY).
    type: str
    choices: [present, verified]
    default: present
  force:
    description:
      - With O(state=present), commit even when the cookie matches (resets the switch's
        forwarding state).
    type: bool
    default: false
seealso:
  - module: netmigrate.core.p4_info
  - name: P4Runtime specification, SetForwardingPipelineConfig
    description: Actions VERIFY, VERIFY_AND_COMMIT and the cookie.
    link: https://p4.org/p4-spec/p4runtime/main/P4Runtime-Spec.html
"""

EXAMPLES = r"""
- name: Install the NetMigrate program on BMv2
  netmigrate.core.p4_pipeline:
    address: 127.0.0.1:9559
    device_id: 0
    p4info: /opt/netmigrate/p4/build/netmigrate.p4info.txtpb
    device_config: /opt/netmigrate/p4/build/netmigrate.json
  delegate_to: localhost
  register: pipeline

- name: Fail unless the lab switch runs this pipeline
  netmigrate.core.p4_pipeline:
    address: 127.0.0.1:9559
    p4info: /opt/netmigrate/p4/build/netmigrate.p4info.txtpb
    state: verified
"""

RETURN = r"""
cookie:
  description: Cookie of the given P4Info and device config.
  returned: success
  type: int
  sample: 1234567890123456789
previous_cookie:
  description: The switch's cookie before the run; null when it had no pipeline (or no cookie).
  returned: success
  type: int
  sample: 987654321987654321
installed:
  description: Whether the switch runs this pipeline after the run (in check mode, before it).
  returned: success
  type: bool
  sample: true
verified:
  description: Whether the switch validated the config in this run (C(VERIFY) or a commit).
  returned: success
  type: bool
  sample: true
"""

import typing as t

from ansible_collections.netmigrate.core.plugins.module_utils._p4rt_runner import (
    TaskFailure,
    load_p4info_or_fail,
    p4rt,
    p4rt_module,
    run_p4rt,
)


def argument_spec() -> dict[str, t.Any]:
    return dict(
        p4info=dict(type="path", required=True),
        device_config=dict(type="path"),
        state=dict(type="str", choices=["present", "verified"], default="present"),
        force=dict(type="bool", default=False),
    )


def load_config(module: t.Any) -> t.Any:
    """The pipeline config from the files, or fail naming the file that is wrong."""
    from pathlib import Path

    params = module.params
    lib = p4rt()
    device_config = b""
    if params["device_config"]:
        try:
            device_config = Path(params["device_config"]).read_bytes()
        except OSError as exc:
            module.fail_json(msg=f"cannot read device_config {params['device_config']}: {exc}")
    return lib.PipelineConfig.load(load_p4info_or_fail(module), device_config)


async def verify(module: t.Any, session: t.Any, config: t.Any) -> dict[str, t.Any]:
    """state=verified: the switch must run this pipeline and accept it; nothing changes."""
    lib = p4rt()
    before = await lib.current_cookie(session)
    if before != config.cookie:
        theirs = "no pipeline" if before is None else f"cookie {before}"
        raise TaskFailure(
            f"P4Runtime target {module.params['address']} does not run this pipeline: "
            f"it has {theirs}, {module.params['p4info']} makes cookie {config.cookie}",
            cookie=config.cookie,
            previous_cookie=before,
        )
    result = await lib.install_pipeline(session, config, check_mode=True, force=True)
    return dict(installed=True, verified=result.verified, previous_cookie=before)


async def ensure(module: t.Any, session: t.Any, config: t.Any) -> dict[str, t.Any]:
    result = await p4rt().install_pipeline(
        session, config, check_mode=module.check_mode, force=module.params["force"]
    )
    return dict(
        changed=result.changed,
        installed=not module.check_mode or not result.changed,
        verified=result.verified,
        previous_cookie=result.previous_cookie,
    )


def main() -> None:
    module = p4rt_module(argument_spec())
    config = load_config(module)

    async def work(session: t.Any) -> dict[str, t.Any]:
        if module.params["state"] == "verified":
            return await verify(module, session, config)
        return await ensure(module, session, config)

    result = run_p4rt(module, work)
    result.setdefault("changed", False)
    result["cookie"] = config.cookie
    if module._diff:
        result["diff"] = dict(
            before=dict(cookie=result["previous_cookie"]),
            after=dict(cookie=config.cookie if result["changed"] else result["previous_cookie"]),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
