"""Progress on stderr: one self-rewriting status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Status:
    label: str
    elapsed_s: float
    phase: str
    ops_per_s: float
    errors: int
    events: int
    migration: str = ""


def format_status(s: Status) -> str:
    text = (
        f"[{s.label}] t={s.elapsed_s:6.1f}s {s.phase:<6} {s.ops_per_s:>9,.0f} ops/s"
        f"  errors={s.errors:,}  redirects/holds={s.events:,}"
    )
    if s.migration:
        text += f"  migration {s.migration}"
    return text


class Progress:
    """Writes status to ``stream``; on a TTY it redraws one line, else prints every
    ``plain_interval`` seconds so CI logs stay readable."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        tty: bool | None = None,
        plain_interval: float = 2.0,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.plain_interval = plain_interval
        self._last_plain = float("-inf")  # the first status line always prints
        self._line_open = False

    def status(self, s: Status, *, force: bool = False) -> None:
        if not self.enabled:
            return
        line = format_status(s)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self._line_open = True
        else:
            now = time.monotonic()
            if not force and now - self._last_plain < self.plain_interval:
                return
            self._last_plain = now
            self.stream.write(line + "\n")
        self.stream.flush()

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._line_open:
            self.stream.write("\r\x1b[K")
            self._line_open = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False
