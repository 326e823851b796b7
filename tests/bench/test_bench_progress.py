"""Progress display: one redrawn line on a terminal, plain timestamped lines otherwise."""

from __future__ import annotations

import io

from netmigrate.bench.progress import Progress, Status


def status(t: float) -> Status:
    return Status("B redis-cluster", t, "during", 12345.6, 2, 40, "50.0% (4,096/8,192 slots)")


def test_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    p.status(status(1.0))
    p.status(status(1.2))
    p.log("migration done")
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3  # two redraws and the clear before the log line
    assert "12,346 ops/s" in text and "migration 50.0% (4,096/8,192 slots)" in text
    assert text.endswith("migration done\n")


def test_pipe_gets_plain_lines_at_most_every_interval() -> None:
    out = io.StringIO()
    p = Progress(out, tty=False, plain_interval=3600)
    p.status(status(1.0))
    p.status(status(1.2))  # within the interval: dropped
    p.status(status(1.4), force=True)
    p.log("done")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("[B redis-cluster] t=   1.0s during")
    assert lines[-1] == "done"


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    p = Progress(out, enabled=False)
    p.status(status(1.0))
    p.log("x")
    p.close()
    assert out.getvalue() == ""
