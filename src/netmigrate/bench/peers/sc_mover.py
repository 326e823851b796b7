"""The stop-and-copy operator tool: copies the keys of some slots between two Redis servers.

It runs as its own process, like ``redis-cli`` for Redis Cluster, so the copy's CPU work
(enumerating keys, hashing them to slots) competes with the load generator only the way an
operator's tool on the same machine would. The harness starts it before the run and talks
to it with JSON lines:

* stdin  ``{"cmd": "copy", "ranges": [[first, last], ...], "batch": 500}``
  stdout ``{"found": n}`` once SCAN finished, then ``{"copied": k, "total": n}`` per batch,
  then ``{"copy_done": n}``. Keys are found with ``SCAN`` (standalone servers have no
  per-slot index) and copied with ``MIGRATE ... COPY REPLACE KEYS`` (server to server,
  TTLs kept), so the source keeps serving reads of those keys until clients switch.
* stdin  ``{"cmd": "cleanup"}`` -> deletes the copied keys from the source with ``UNLINK``
  (pipelined), stdout ``{"deleted": n}``.
* stdin EOF -> exit 0. Any failure: ``{"error": "..."}`` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from netmigrate.protocol.constants import SLOT_COUNT
from netmigrate.protocol.slot import key_slot


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def find_keys(src: redis.Redis, wanted: bytearray, scan_count: int = 1000) -> list[bytes]:
    keys: list[bytes] = []
    cursor = 0
    while True:
        cursor, batch = src.scan(cursor=cursor, count=scan_count)
        keys.extend(k for k in batch if wanted[key_slot(k)])
        if cursor == 0:
            return keys


def copy_keys(
    src: redis.Redis, host: str, port: int, keys: list[bytes], batch: int, timeout_ms: int
) -> None:
    total = len(keys)
    done = 0
    for i in range(0, total, batch):
        chunk = keys[i : i + batch]
        reply = src.execute_command(
            "MIGRATE", host, port, "", 0, timeout_ms, "COPY", "REPLACE", "KEYS", *chunk
        )
        # NOKEY only if none of the keys exists: nothing deletes them while writes are held.
        if reply not in (b"OK", "OK", b"NOKEY", "NOKEY"):
            raise RuntimeError(f"MIGRATE answered {reply!r}")
        done += len(chunk)
        _emit({"copied": done, "total": total})


def unlink_keys(src: redis.Redis, keys: list[bytes], batch: int) -> int:
    deleted = 0
    for i in range(0, len(keys), batch):
        deleted += int(src.unlink(*keys[i : i + batch]))
    return deleted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--source-port", type=int, required=True)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--timeout-ms", type=int, default=10_000)
    args = p.parse_args(argv)
    src = redis.Redis(host=args.host, port=args.source_port)
    keys: list[bytes] = []
    try:
        src.ping()
        _emit({"ready": True})
        for line in sys.stdin:
            msg = json.loads(line)
            if msg["cmd"] == "copy":
                wanted = bytearray(SLOT_COUNT)
                for first, last in msg["ranges"]:
                    wanted[first : last + 1] = b"\x01" * (last - first + 1)
                t = time.monotonic()
                keys = find_keys(src, wanted)
                _emit({"found": len(keys), "scan_seconds": round(time.monotonic() - t, 4)})
                copy_keys(
                    src, args.host, args.target_port, keys, int(msg.get("batch", 500)),
                    args.timeout_ms,
                )  # fmt: skip
                _emit({"copy_done": len(keys)})
            elif msg["cmd"] == "cleanup":
                _emit({"deleted": unlink_keys(src, keys, int(msg.get("batch", 1000)))})
            else:
                raise ValueError(f"unknown command {msg['cmd']!r}")
        return 0
    except Exception as exc:  # reported to the harness, which fails the migration
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        src.close()


if __name__ == "__main__":
    sys.exit(main())
