# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the P4Runtime connection options (plugins/module_utils/_p4runtime.py).

``netmigrate.core._p4runtime`` documents them as a P4 module's own options;
``netmigrate.core._p4runtime.switch`` as the suboptions of a ``switch`` option (the migration
module's). The connection options are written once here and indented into both.
"""

from __future__ import annotations

import textwrap

_CONNECTION = r"""
address:
  description:
    - gRPC address of the P4Runtime server, V(host:port) (for example V(127.0.0.1:9559)) or
      V(unix:/path/to/socket) for the lab switch.
  type: str
  required: true
device_id:
  description:
    - P4Runtime device id of the target.
    - The lab switch and Tofino use V(1); BMv2 C(simple_switch_grpc) uses V(0) unless started
      with C(--device-id).
  type: int
  default: 1
election_id:
  description:
    - Election id used to become the primary controller of the device (arbitration).
    - Must be higher than the election id of any other controller that should lose.
    - The same default everywhere (every module, C(netmigrate migrate), the lab), so tasks
      and the migration controller take turns as one controller.
  type: int
  default: 10
tls:
  description:
    - Connect with TLS. Without it the channel is plain text (the local lab's choice).
    - The switches the collection's roles run serve mutual TLS by default; the playbooks pass
      the P4Runtime CA and a client certificate (C(playbooks/vars/p4runtime_tls.yml)).
    - To a unix socket (V(unix:/path)) the server's certificate is checked for V(localhost).
  type: bool
  default: false
ca_cert:
  description:
    - With TLS, file of CA certificates to verify the server with.
      Without it the system trust store is used.
  type: path
client_cert:
  description:
    - With TLS, client certificate for mutual TLS. Requires the client key.
  type: path
client_key:
  description:
    - With TLS, key of the client certificate.
  type: path
""".strip("\n")

_TIMEOUT = r"""
timeout:
  description:
    - Seconds to wait for the connection, the arbitration and each request.
  type: float
  default: 10.0
""".strip("\n")


class ModuleDocFragment:
    """Both fragments are set below the class: ansible-test sanity (yamllint) reads only string
    literals in the class body, while Ansible reads the attributes of the imported class."""


ModuleDocFragment.DOCUMENTATION = (
    "options:\n"
    + textwrap.indent(f"{_CONNECTION}\n{_TIMEOUT}", "  ")
    + r"""
requirements:
  - grpcio and finsy on the managed host, installed with the netmigrate Python package.
notes:
  - The modules talk to the P4Runtime server from the managed host, usually the controller
    (C(delegate_to=localhost) or C(connection=local)).
"""
)

ModuleDocFragment.SWITCH = (
    r"""
options:
  switch:
    description:
      - The switch's P4Runtime service, with the connection options of the P4 modules
        (M(netmigrate.core.p4_pipeline) and others).
    type: dict
    suboptions:
""".lstrip("\n")
    + textwrap.indent(_CONNECTION, "      ")
    + "\n"
)
