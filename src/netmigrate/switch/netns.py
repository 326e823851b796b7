"""Run a function inside a named network namespace, then come back.

The switch process lives in the root namespace (its P4Runtime server listens there) and
opens its port sockets inside ``--netns NAME``: a socket keeps the namespace it was created
in, so we enter the namespace with setns(2), create the sockets and return. setns only moves
the calling thread, and Python 3.11 has no ``os.setns``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_T = TypeVar("_T")


class NetnsError(OSError):
    pass


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)
    if setns is not None:  # Python >= 3.12
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def call_in_netns(name: str | None, fn: Callable[[], _T]) -> _T:
    """``fn()`` with this thread in namespace ``name`` (None: the current one)."""
    if name is None:
        return fn()
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"network namespace {name!r} does not exist ({path})") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return fn()
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
