"""Checks recorded client histories against the guarantees of a live migration."""

from netmigrate.checker.history import (
    CheckResult,
    History,
    Op,
    Violation,
    unique_value,
    value_token,
)

__all__ = ["CheckResult", "History", "Op", "Violation", "unique_value", "value_token"]
