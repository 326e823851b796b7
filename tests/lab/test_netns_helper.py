"""The package's one setns(2) helper, against real network namespaces."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from netmigrate.lab import LabError, tcp_ready
from netmigrate.netns import NetnsError, call_in_netns, enter_netns, netns_path

pytestmark = pytest.mark.root


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def netns(prefix: str) -> str:
    name = f"{prefix}-setns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def test_bad_and_missing_names_are_clear_errors() -> None:
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(NetnsError, match="invalid network namespace name"):
            netns_path(bad)
    with pytest.raises(NetnsError, match="'nmt4l-none' does not exist"):
        call_in_netns("nmt4l-none", lambda: None)
    with pytest.raises(NetnsError, match="'nmt4l-none' does not exist"):
        enter_netns("nmt4l-none")


def test_lab_readiness_probe_reports_a_missing_namespace_as_a_lab_error() -> None:
    # The supervisor stops a process it just started only on a LabError.
    with pytest.raises(LabError, match="'nmt4l-none' does not exist"):
        tcp_ready("127.0.0.1", 1, netns="nmt4l-none")()


def test_none_calls_in_this_thread() -> None:
    assert call_in_netns(None, threading.get_ident) == threading.get_ident()


def test_call_runs_inside_and_leaves_the_caller_where_it_was(netns: str) -> None:
    home = _netns_inode()
    target = os.stat(netns_path(netns)).st_ino
    assert call_in_netns(netns, _netns_inode) == target != home
    assert _netns_inode() == home
    # A socket made inside stays there: its own loopback, not the caller's listener.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inside = call_in_netns(netns, socket.socket)
        with inside, pytest.raises(ConnectionRefusedError):
            inside.connect(("127.0.0.1", port))
    with pytest.raises(ValueError, match="boom"):
        call_in_netns(netns, lambda x: (_ for _ in ()).throw(ValueError(x)), "boom")


def test_enter_moves_a_process_for_good(netns: str) -> None:
    code = (
        "import os, sys\n"
        "from netmigrate.netns import enter_netns\n"
        "enter_netns(sys.argv[1])\n"
        "print(os.stat('/proc/self/ns/net').st_ino)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, netns], capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == os.stat(netns_path(netns)).st_ino
