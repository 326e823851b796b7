"""The testbed harness: fresh Debian hosts on one machine, booted with systemd as PID 1.

``netmigrate testbed up`` makes one template Debian tree with ``debootstrap`` (cached, keyed by
its package list), one overlay of it per host, boots each under ``systemd-nspawn`` in its own
network namespace, wires them like the lab (data network: veths to the switch host) plus a
management bridge with NAT, and writes an Ansible inventory in the shape of
``inventory/testbed.example``. ``netmigrate testbed down`` removes all of it. Nothing of ours
is installed on the hosts: the collection provisions them over SSH, as a user's servers.
"""
