"""A stand-in for a child that crashes when it runs Python between fork and exec.

gRPC's threads and at-fork handlers make any Python in such a child unsafe (a CI run lost a
service that way: the child died before its exec, with no log). Python runs the at-fork hooks
in the child exactly when the parent passed a ``preexec_fn``, so a hook that kills the child
makes that hazard deterministic: code that starts processes must survive :func:`armed`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_ARMED = False
#: What such a child exits with (so a failure names its cause).
EXIT_CODE = 97


def _die_in_child() -> None:
    if _ARMED:
        os._exit(EXIT_CODE)


# Registered once per process; it does nothing unless armed.
os.register_at_fork(after_in_child=_die_in_child)


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While inside, a child that runs Python before its exec dies at once."""
    global _ARMED
    _ARMED = True
    try:
        yield
    finally:
        _ARMED = False
