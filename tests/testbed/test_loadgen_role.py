"""The loadgen role notices a load that exits before it is ready, at once and with its log.

On fresh hosts a load generator without the bench extra exited at its first import; the role
then waited its whole ready timeout (300 s by default) for a ``ready`` file that could not
come, and the scenario's test timed out with nothing to read. A stand-in interpreter that
prints a message and exits plays that load here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from testbed_helpers import ansible_playbook, source_collections

STAND_IN = """\
#!/bin/sh
echo "netmigrate bench: needs hdrh, part of the bench extra" >&2
exit 2
"""

PLAY = """\
- name: Load that cannot start
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: netmigrate.core.loadgen
      loadgen_state: started
      loadgen_name: broken
      loadgen_python: {python}
      loadgen_out_dir: {out}
      loadgen_run_dir: {run}
      loadgen_ready_timeout: 120
"""


def test_a_load_that_exits_before_ready_fails_at_once_with_its_log(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(python=python, out=tmp_path / "load", run=tmp_path / "run"))
    collections = source_collections(tmp_path / "collections")
    inventory = tmp_path / "hosts"
    inventory.write_text("localhost ansible_python_interpreter=" + sys.executable + "\n")

    t0 = time.monotonic()
    run = ansible_playbook(play, inventory, collections, tmp_path)
    elapsed = time.monotonic() - t0

    assert run.returncode != 0, run.output[-4000:]
    assert "the load exited before it was ready" in run.output, run.output[-4000:]
    assert "needs hdrh, part of the bench extra" in run.output, run.output[-4000:]
    assert elapsed < 60, f"{elapsed:.0f} s: the role waited for a load that had exited"
