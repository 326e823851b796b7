"""Run code inside a named network namespace: the one setns(2) helper of the package.

A socket keeps the namespace it was created in. So the lab switch opens its AF_PACKET ports
inside ``--netns NAME`` while its P4Runtime server stays in the root namespace, the lab probes
and reaches services inside its host namespaces, and the TCP forwarder and the load generator
move themselves into a namespace before they open any socket.

setns(2) moves only the calling thread, and Python 3.11 has no ``os.setns``, hence ctypes.
Standard library only: both the switch and the lab import this module (downward).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_T = TypeVar("_T")


class NetnsError(OSError):
    pass


def netns_path(name: str) -> str:
    """``/run/netns/NAME`` (what ``ip netns add NAME`` creates); NetnsError on a bad name."""
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def _setns(fd: int, what: str) -> None:
    setns = getattr(os, "setns", None)
    if setns is not None:  # Python >= 3.12
        try:
            setns(fd, CLONE_NEWNET)
        except OSError as exc:
            raise NetnsError(exc.errno, f"setns({what}): {os.strerror(exc.errno or 0)}") from None
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(ctypes.c_int(fd), ctypes.c_int(CLONE_NEWNET)) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns({what}): {os.strerror(err)}")


def _open(name: str) -> int:
    path = netns_path(name)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"network namespace {name!r} does not exist ({path})") from None


def enter_netns(name: str) -> None:
    """Move this thread into namespace ``name`` for good.

    For a process that is still single-threaded (a forwarder, the load generator): the
    process is then in ``name``, and so is every thread it starts afterwards, while files it
    opened before (a listening socket, its log) stay where they are.
    """
    fd = _open(name)
    try:
        _setns(fd, name)
    finally:
        os.close(fd)


def call_in_netns(name: str | None, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` on a short-lived thread that has joined namespace ``name``.

    Sockets ``fn`` opens keep working in ``name`` after the thread is gone, while the caller's
    threads never leave their own namespace (a failed return trip cannot strand them, and an
    event loop calling this is not moved under its other tasks). ``None``: call ``fn`` here.
    """
    if name is None:
        return fn(*args)
    fd = _open(name)

    def enter_and_call() -> _T:
        _setns(fd, name)
        return fn(*args)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(enter_and_call).result()
    finally:
        os.close(fd)


def current_netns() -> str:
    """The name of the named namespace (``ip netns``) this process is in, or ``""`` when it is
    in none of them (the root namespace, as far as the lab is concerned)."""
    try:
        here = os.stat("/proc/self/ns/net")
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return ""
    for name in names:
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino):
            return name
    return ""
