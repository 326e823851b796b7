"""Exceptions of the P4Runtime helpers: what went wrong, with the gRPC status to prove it.

Every error carries ``code`` (the gRPC status code name, e.g. ``"PERMISSION_DENIED"``),
``message`` (the switch's own words) and, for batches, ``details``: one
:class:`UpdateError` per failed update, in request order. Callers (Ansible modules, the
migration controller) show ``str(exc)`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UpdateError:
    """One failed update (or read request) of a batch."""

    index: int
    code: str
    message: str


class P4RuntimeError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        operation: str = "",
        details: tuple[UpdateError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.operation = operation
        self.details = details

    def __str__(self) -> str:
        head = f"{self.operation}: " if self.operation else ""
        text = f"{head}{self.code}: {self.message}"
        for d in self.details[:5]:
            text += f"\n  update {d.index}: {d.code}: {d.message}"
        if len(self.details) > 5:
            text += f"\n  ... and {len(self.details) - 5} more"
        return text

    @property
    def detail_codes(self) -> set[str]:
        return {d.code for d in self.details}


class SwitchUnreachableError(P4RuntimeError):
    """No P4Runtime server answers at the address (or TLS failed)."""


class NotPrimaryError(P4RuntimeError):
    """Another controller is primary, or the election id is taken."""


class PipelineMismatchError(P4RuntimeError):
    """The switch rejected the P4Info / device config (wrong program for this target)."""


class NoPipelineError(P4RuntimeError):
    """The switch has no forwarding pipeline yet (FAILED_PRECONDITION)."""


class WriteError(P4RuntimeError):
    """A Write batch failed; ``details`` names each failed update."""


class SlotMapError(P4RuntimeError):
    """Slot map packet-out/packet-in exchange failed (no answer, wrong answer)."""
