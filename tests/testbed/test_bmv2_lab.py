"""``netmigrate_switch_kind: bmv2`` in the local lab: site.yml runs simple_switch_grpc itself.

Before, the lab inventory's empty ``switches`` group meant that nothing ran BMv2 and site.yml
failed at "Install the pipeline" (no P4Runtime server). Now the lab play starts BMv2 in the
lab's switch namespace on the lab's ports, with P4Runtime on the lab's unix socket, or fails
at once where BMv2 is not installed. No BMv2 on this machine: a stand-in binary records how it
was started and where, then becomes the lab switch with the same ports and address, so the
whole site.yml (pipeline, entries, Redis, agents) runs against what BMv2's place is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed_helpers import REPO_ROOT, PlaybookRun, ansible_playbook, source_collections

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

PREFIX = "nmtbb"
INVENTORY = REPO_ROOT / "inventory" / "lab"
PLAYBOOKS = REPO_ROOT / "playbooks"
LAB_DIRS = [Path(f"/run/netmigrate-lab/{PREFIX}{suffix}") for suffix in ("", "-nodes", "-secrets")]

STAND_IN = """\
#!{python}
# simple_switch_grpc's place: record the command line and the network namespace, then run the
# lab switch on the same ports, device id and P4Runtime address.
import json, os, sys
argv = sys.argv[1:]
with open({record!r}, "w") as f:
    json.dump({{"argv": argv, "netns": os.readlink("/proc/self/ns/net")}}, f)
target, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
ports = [target[i + 1].replace("@", "=") for i, a in enumerate(target) if a == "-i"]
cmd = [sys.executable, "-m", "netmigrate.cli", "switch"]
cmd += [f"--port={{p}}" for p in ports]
cmd += ["--device-id", target[target.index("--device-id") + 1]]
cmd += ["--grpc-addr", rest[rest.index("--grpc-server-addr") + 1]]
if "--grpc-server-ssl" in rest:
    cmd += ["--tls-cert", rest[rest.index("--grpc-server-cert") + 1]]
    cmd += ["--tls-key", rest[rest.index("--grpc-server-key") + 1]]
    if "--grpc-server-with-client-auth" in rest:
        cmd += ["--tls-ca", rest[rest.index("--grpc-server-cacert") + 1]]
os.execv(sys.executable, cmd)
"""


def _teardown() -> None:
    subprocess.run(
        [sys.executable, "-m", "netmigrate.cli", "lab", "down", "--prefix", PREFIX],
        capture_output=True, check=False,
    )  # fmt: skip
    for d in LAB_DIRS:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    _teardown()
    try:
        yield source_collections(tmp_path / "collections")
    finally:
        _teardown()


def _play(collections: Path, workdir: Path, name: str, *extra: str) -> PlaybookRun:
    args = ["-e", f"netmigrate_lab_prefix={PREFIX}", "-e", "netmigrate_switch_kind=bmv2", *extra]
    return ansible_playbook(PLAYBOOKS / name, INVENTORY, collections, workdir, *args)


def _pids_of(binary: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(binary).encode() in cmdline or b"--port=1=s1-client" in cmdline:
                pids.append(int(proc.name))
    return pids


def _plain_client_refused(address: str) -> bool:
    probe = (
        "import asyncio, sys\n"
        "from netmigrate.p4rt import P4RTSession, SwitchUnreachableError\n"
        "async def main():\n"
        "    try:\n"
        f"        await P4RTSession({address!r}, timeout=3).open()\n"
        "    except SwitchUnreachableError:\n"
        "        sys.exit(0)\n"
        "    sys.exit(1)\n"
        "asyncio.run(main())\n"
    )
    return subprocess.run([sys.executable, "-c", probe], check=False, timeout=60).returncode == 0


def test_without_bmv2_site_fails_at_once_and_says_so(lab: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "simple_switch_grpc"
    run = _play(lab, tmp_path, "site.yml", "-e", f"netmigrate_bmv2_binary={missing}")
    assert run.returncode != 0
    assert f"{missing} is not installed on localhost" in run.output, run.output[-4000:]
    assert "Install the pipeline" not in run.output


def test_with_bmv2_site_runs_it_in_the_switch_namespace(lab: Path, tmp_path: Path) -> None:
    record = tmp_path / "started.json"
    binary = tmp_path / "bin" / "simple_switch_grpc"
    binary.parent.mkdir()
    binary.write_text(STAND_IN.format(python=sys.executable, record=str(record)))
    binary.chmod(0o755)
    # As on a switch host: P4Runtime over mutual TLS (the local lab's default is plain text).
    bmv2 = ("-e", f"netmigrate_bmv2_binary={binary}", "-e", "netmigrate_p4runtime_tls=true")
    # Switches given as docs/testbed.md gives them, strings on the command line (CI has no p4c:
    # false here; the compile step once failed on any -e value, a string is no boolean).
    bmv2 += ("-e", "netmigrate_p4_build=false")

    first = _play(lab, tmp_path, "site.yml", *bmv2)
    assert first.returncode == 0, first.output[-6000:]
    started = json.loads(record.read_text())
    # /run/netns/NAME is the namespace itself: its inode is what /proc/PID/ns/net names.
    assert started["netns"] == f"net:[{os.stat(f'/run/netns/{PREFIX}-sw').st_ino}]"
    target = started["argv"][: started["argv"].index("--")]
    ports = [target[i + 1] for i, a in enumerate(target) if a == "-i"]
    assert ports == ["1@s1-client", "2@s2-redis1", "3@s3-redis2", "4@s4-redis3"]
    assert target[target.index("--log-level") + 1] == "info"
    rest = started["argv"][started["argv"].index("--") + 1 :]
    grpc = rest[rest.index("--grpc-server-addr") + 1]
    assert grpc == f"unix:/run/netmigrate-lab/{PREFIX}/p4runtime.sock"
    # Mutual TLS, the files passed by name; the key is 0600 and never in the playbook's output.
    assert "--grpc-server-ssl" in rest and "--grpc-server-with-client-auth" in rest
    key = Path(rest[rest.index("--grpc-server-key") + 1])
    assert key.stat().st_mode & 0o777 == 0o600
    key_body = key.read_text().splitlines()[1]
    assert key_body and key_body not in first.output
    # The pipeline and entries went in over TLS; a client without a certificate gets nothing.
    assert _plain_client_refused(grpc)

    again = _play(lab, tmp_path, "site.yml", *bmv2)
    assert again.returncode == 0, again.output[-6000:]
    assert again.totals()["changed"] == 0, again.output[-6000:]

    down = _play(lab, tmp_path, "lab_down.yml", *bmv2)
    assert down.returncode == 0, down.output[-6000:]
    assert _pids_of(binary) == []
