# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the Redis connection options (plugins/module_utils/_redis.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or address of the Redis server.
      - When neither O(login_host) nor O(login_unix_socket) is given, C(localhost) is used.
    type: str
  login_port:
    description:
      - TCP port of the Redis server. Ignored with O(login_unix_socket).
    type: int
    default: 6379
  login_unix_socket:
    description:
      - Path of the Redis server's unix socket, instead of a TCP connection.
    type: path
  login_user:
    description:
      - ACL user to log in as. Without it the module logs in as the C(default) user.
    type: str
  login_password:
    description:
      - Password of O(login_user) (or of the C(default) user). Never logged.
    type: str
  connect_timeout:
    description:
      - Seconds to wait for the connection and for each reply.
    type: float
    default: 5.0
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  validate_certs:
    description:
      - With O(tls=true), verify the server certificate and host name.
    type: bool
    default: true
  ca_certs:
    description:
      - With O(tls=true), file of CA certificates to verify the server with.
    type: path
  client_cert_file:
    description:
      - With O(tls=true), client certificate for mutual TLS. Requires O(client_key_file).
    type: path
  client_key_file:
    description:
      - With O(tls=true), key of O(client_cert_file).
    type: path
requirements:
  - redis (redis-py) on the managed host, installed with the netmigrate Python package.
notes:
  - A refused connection or a refused password fails the task at once, before anything changed.
"""
