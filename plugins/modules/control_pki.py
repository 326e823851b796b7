#!/usr/bin/python
# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
module: control_pki
short_description: A small CA and certificates for the NetMigrate agents' control service
version_added: 0.1.0
description:
  - Ensures a directory that holds a CA (C(ca.pem), C(ca.key)) and leaf certificates
    (C(NAME.pem), C(NAME.key)) for mutual TLS on the agents' gRPC control service, as the
    P(netmigrate.core.agent#role) role uses it (run it on the Ansible controller, where the CA
    key stays).
  - Keys are EC P-256, written with mode 0600 and never returned or logged.
  - Idempotent. A certificate is made again only when it is missing, does not match its key, is
    not issued by the current CA, names other addresses or usages, or expires within
    O(renew_days); a new CA makes every certificate new.
  - Several tasks at once (one per agent host, delegated to the controller) take turns on a
    lock file in O(path).
author:
  - NetMigrate developers (@netmigrate)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be made, without writing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - Directory of the CA and the certificates (created with mode 0700).
    type: path
    required: true
  ca_common_name:
    description:
      - Subject of the CA. A different name makes a new CA (and new certificates).
    type: str
    default: NetMigrate control CA
  certificates:
    description:
      - Leaf certificates to ensure, signed by the CA.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - File name stem (C(NAME.pem), C(NAME.key)).
        type: str
        required: true
      common_name:
        description:
          - Subject of the certificate; O(certificates[].name) by default.
        type: str
      dns_names:
        description:
          - DNS names the certificate is valid for (subject alternative names).
        type: list
        elements: str
        default: []
      ip_addresses:
        description:
          - IP addresses the certificate is valid for (subject alternative names).
        type: list
        elements: str
        default: []
      usages:
        description:
          - V(server) for a control service, V(client) for whoever calls one (the controller,
            and an agent calling its migration peer).
        type: list
        elements: str
        choices: [server, client]
        default: [server, client]
  valid_days:
    description:
      - Validity of a new certificate, in days.
    type: int
    default: 825
  ca_valid_days:
    description:
      - Validity of a new CA, in days.
    type: int
    default: 3650
  renew_days:
    description:
      - Make a certificate (or the CA) again when it expires within this many days.
    type: int
    default: 30
requirements:
  - cryptography (ansible-core depends on it, so the Ansible controller has it).
seealso:
  - module: netmigrate.core.migration
"""

EXAMPLES = r"""
- name: The CA and the certificate of one agent, on the controller
  netmigrate.core.control_pki:
    path: /etc/netmigrate/pki
    certificates:
      - name: agent-redis1
        ip_addresses: [10.0.0.11, 127.0.0.1]
        dns_names: [redis1.example.net]
  delegate_to: localhost

- name: A client certificate for the migration controller
  netmigrate.core.control_pki:
    path: /etc/netmigrate/pki
    certificates:
      - name: controller
        usages: [client]
  delegate_to: localhost
"""

RETURN = r"""
ca:
  description: Path of the CA certificate (the CA key is beside it and never leaves the host).
  returned: always
  type: str
  sample: /etc/netmigrate/pki/ca.pem
ca_changed:
  description: Whether the CA was made (again).
  returned: always
  type: bool
certificates:
  description: Per certificate, its paths, whether it was made and why.
  returned: always
  type: dict
  sample:
    agent-redis1:
      cert: /etc/netmigrate/pki/agent-redis1.pem
      key: /etc/netmigrate/pki/agent-redis1.key
      changed: true
      reason: missing
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.netmigrate.core.plugins.module_utils._pki import (
    CRYPTOGRAPHY_ERROR,
    LeafSpec,
    ensure_pki,
)

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    ca_common_name=dict(type="str", default="NetMigrate control CA"),
    certificates=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            common_name=dict(type="str"),
            dns_names=dict(type="list", elements="str", default=[]),
            ip_addresses=dict(type="list", elements="str", default=[]),
            usages=dict(
                type="list",
                elements="str",
                choices=["server", "client"],
                default=["server", "client"],
            ),
        ),
    ),
    valid_days=dict(type="int", default=825),
    ca_valid_days=dict(type="int", default=3650),
    renew_days=dict(type="int", default=30),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if CRYPTOGRAPHY_ERROR is not None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_ERROR)
    p = module.params
    try:
        leaves = [
            LeafSpec(
                name=c["name"],
                common_name=c["common_name"] or c["name"],
                dns_names=tuple(c["dns_names"]),
                ip_addresses=tuple(c["ip_addresses"]),
                usages=tuple(c["usages"]),
            )
            for c in p["certificates"]
        ]
        result = ensure_pki(
            p["path"],
            p["ca_common_name"],
            leaves,
            days=p["valid_days"],
            ca_days=p["ca_valid_days"],
            renew_days=p["renew_days"],
            check=module.check_mode,
        )
    except (ValueError, OSError) as exc:
        module.fail_json(msg=f"cannot make the control PKI in {p['path']}: {exc}")
    module.exit_json(
        changed=result.changed,
        ca=result.ca_cert,
        ca_changed=result.ca_changed,
        certificates={
            name: dict(cert=cert, key=key, changed=changed, reason=why)
            for name, (cert, key, changed, why) in result.leaves.items()
        },
    )


if __name__ == "__main__":
    main()
