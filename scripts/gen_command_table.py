"""Write src/netmigrate/rediscmd/data/commands.json from the COMMAND reply of a real Redis.

.venv/bin/python scripts/gen_command_table.py [--port 6379]   # a running redis-server
.venv/bin/python scripts/gen_command_table.py --spawn         # starts a throwaway one
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from netmigrate.rediscmd.table import CommandTable

OUT = Path(__file__).resolve().parents[1] / "src/netmigrate/rediscmd/data/commands.json"


def read_table(port: int) -> CommandTable:
    version = redis.Redis(port=port).info("server")["redis_version"]
    conn = redis.Connection(port=port)
    try:
        conn.send_command("COMMAND")
        reply = conn.read_response()
    finally:
        conn.disconnect()
    return CommandTable.from_command_reply(reply, redis_version=str(version))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--spawn", action="store_true", help="start a throwaway redis-server")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    proc = None
    port = args.port
    if args.spawn:
        port = 6398
        workdir = tempfile.mkdtemp(prefix="nm-cmdtable-")
        binary = shutil.which("redis-server") or "redis-server"
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
    try:
        table = read_table(port)
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    args.out.write_text(table.to_json())
    print(f"wrote {args.out}: {len(table)} commands of Redis {table.redis_version}")


if __name__ == "__main__":
    main()
