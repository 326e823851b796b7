"""The one exception type of the lab package."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab operation failed; the message says which step and why."""
