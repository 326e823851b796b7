# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the P4Runtime connection options (plugins/module_utils/_p4runtime.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
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
    type: int
    default: 1
  tls:
    description:
      - Connect with TLS. Without it the channel is plain text (lab and BMv2 default).
    type: bool
    default: false
  ca_cert:
    description:
      - With O(tls=true), file of CA certificates to verify the server with.
        Without it the system trust store is used.
    type: path
  client_cert:
    description:
      - With O(tls=true), client certificate for mutual TLS. Requires O(client_key).
    type: path
  client_key:
    description:
      - With O(tls=true), key of O(client_cert).
    type: path
  timeout:
    description:
      - Seconds to wait for the connection, the arbitration and each request.
    type: float
    default: 10.0
requirements:
  - grpcio and finsy on the managed host, installed with the netmigrate Python package.
notes:
  - The modules talk to the P4Runtime server from the managed host, usually the controller
    (C(delegate_to=localhost) or C(connection=local)).
"""
