# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402  (Ansible wants DOCUMENTATION and EXAMPLES before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace of the controller
version_added: 0.1.0
description:
  - Runs tasks of a lab host, which is a Linux network namespace on the controller (as made by
    C(ip netns add)), by executing every command through C(ip netns exec NAME).
  - The namespace shares the controller's file systems, so transferring files is a local copy.
  - Tasks run as the user running Ansible, which must be root to enter a namespace.
    C(become) to that same user is a no-op; C(become) to another user is refused.
author:
  - NetMigrate developers (@netmigrate)
options:
  netns:
    description:
      - Name of the network namespace, as C(ip netns list) shows it.
      - Taken from, by increasing precedence, the inventory host name, C(ansible_host) and
        C(netmigrate_netns).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: netmigrate_netns
  ip_executable:
    description:
      - The C(ip) command of iproute2.
    type: str
    default: ip
    vars:
      - name: netmigrate_netns_ip_executable
extends_documentation_fragment:
  - connection_pipelining
notes:
  - Set C(ansible_pipelining=true) for lab hosts. Every task then costs one C(ip netns exec)
    instead of several (no temporary files), which is safe here because there is no TTY or
    C(become) prompt involved.
  - C(ip netns exec) also bind-mounts C(/etc/netns/NAME/*) over C(/etc) and mounts a C(/sys)
    of the namespace, for the task's processes only.
"""

EXAMPLES = r"""
# inventory/lab.yml
# all:
#   children:
#     redis_nodes:
#       hosts:
#         nm-redis1:
#         nm-redis2:
#           netmigrate_netns: nm-redis2
#       vars:
#         ansible_connection: netmigrate.core.netns
#         ansible_pipelining: true
#         ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

import getpass
import os
import re
import shutil
import subprocess
import typing as t

import ansible.constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# What `ip netns add` accepts as a name and keeps as a file under /run/netns.
_VALID_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,255}$")
_NETNS_DIR = "/run/netns"


class Connection(ConnectionBase):
    """Local execution inside a named network namespace."""

    transport = "netmigrate.core.netns"
    has_pipelining = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # The action plugin compares become_user with this: become to root as root is a no-op.
        self.default_user = getpass.getuser()
        self._netns: str | None = None

    def _connect(self) -> Connection:
        if self._connected:
            return self
        name = self.get_option("netns")
        if not isinstance(name, str) or not _VALID_NAME.match(name):
            raise AnsibleConnectionFailure(f"invalid network namespace name {name!r}")
        if not os.path.exists(os.path.join(_NETNS_DIR, name)):
            raise AnsibleConnectionFailure(
                f"network namespace {name!r} does not exist (see `ip netns list`)"
            )
        if shutil.which(self.get_option("ip_executable")) is None:
            ip = self.get_option("ip_executable")
            raise AnsibleConnectionFailure(f"{ip!r} not found: the netns connection needs iproute2")
        self._netns = name
        self._play_context.remote_user = self.default_user
        display.vvv(f"ESTABLISH NETNS CONNECTION TO {name}", host=name)
        self._connected = True
        return self

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become and getattr(self.become, "_id", None):
            # The action plugin wrapped the command for a user other than ours; answering
            # become prompts through a namespace is not worth it for lab hosts.
            raise AnsibleConnectionFailure(
                f"the netns connection runs tasks as {self.default_user!r} and does not support "
                "become to another user"
            )
        executable = C.DEFAULT_EXECUTABLE or "/bin/sh"
        argv = [
            self.get_option("ip_executable"),
            "netns",
            "exec",
            self._netns,
            executable,
            "-c",
            to_text(cmd),
        ]
        display.vvv(f"EXEC {to_text(cmd)}", host=self._netns)
        try:
            proc = subprocess.Popen(
                [to_bytes(a, errors="surrogate_or_strict") for a in argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise AnsibleConnectionFailure(f"cannot run {argv[0]}: {exc}") from exc
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._netns)
        self._copy(in_path, out_path)

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._netns)
        self._copy(in_path, out_path)

    @staticmethod
    def _copy(src: str, dest: str) -> None:
        # A network namespace shares the mount namespace with the controller: a plain copy.
        if not os.path.exists(to_bytes(src, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {src}")
        try:
            shutil.copyfile(
                to_bytes(src, errors="surrogate_or_strict"),
                to_bytes(dest, errors="surrogate_or_strict"),
            )
        except OSError as exc:
            raise AnsibleError(f"failed to copy {src} to {dest}: {exc}") from exc

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._connected = False
