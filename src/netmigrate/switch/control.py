"""The switch's local control socket: run-time fault injection and statistics.

Independent of P4Runtime (faults are a test device, not part of the pipeline): a unix
stream socket (``netmigrate switch --control-socket PATH``, mode 0600) speaking one JSON
object per line each way.

Requests and answers::

    {"op": "set_fault", "port": 1, "drop": 0.01, "delay_ms": 5}  -> {"ok": true}
    {"op": "clear_fault", "port": 1}                              -> {"ok": true}
    {"op": "stats"}                                               -> {"ok": true, "stats": {...}}

A bad request gets ``{"ok": false, "error": "..."}`` and changes nothing. From a shell::

    python -m netmigrate.switch.control PATH set-fault 1 drop=0.01,delay_ms=5
    python -m netmigrate.switch.control PATH clear-fault 1
    python -m netmigrate.switch.control PATH stats
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from netmigrate.switch.faults import Fault, FaultError, check_port, parse_fault

MAX_LINE = 64 * 1024


class ControlError(RuntimeError):
    pass


class ControlServer:
    """Serves the control socket for a :class:`~netmigrate.switch.dataplane.Dataplane`."""

    def __init__(self, path: Path, dataplane) -> None:
        self.path = path
        self.dataplane = dataplane
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = self.handle(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ControlError("a request is a JSON object")
            op = req.get("op")
            if op == "set_fault":
                port = check_port(_int(req, "port"))
                fault = Fault(float(req.get("drop", 0.0)), float(req.get("delay_ms", 0.0)))
                self.dataplane.set_fault(port, fault)
                return {"ok": True}
            if op == "clear_fault":
                self.dataplane.set_fault(check_port(_int(req, "port")), Fault())
                return {"ok": True}
            if op == "stats":
                return {"ok": True, "stats": self.dataplane.stats()}
            raise ControlError(f"unknown op {op!r} (set_fault, clear_fault, stats)")
        except (ControlError, FaultError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}


def _int(req: dict[str, Any], key: str) -> int:
    value = req.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"{key} must be an integer")
    return value


class ControlClient:
    """Blocking client of the control socket (tests, the lab, shells)."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise ControlError(f"cannot reach the switch at {self.path}: {exc}") from None
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "request failed"))
        return answer

    def set_fault(self, port: int, drop: float = 0.0, delay_ms: float = 0.0) -> None:
        self.call({"op": "set_fault", "port": port, "drop": drop, "delay_ms": delay_ms})

    def clear_fault(self, port: int) -> None:
        self.call({"op": "clear_fault", "port": port})

    def stats(self) -> dict[str, Any]:
        return self.call({"op": "stats"})["stats"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netmigrate.switch.control")
    p.add_argument("socket", help="the switch's --control-socket path")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("set-fault", help="PORT drop=P,delay_ms=D")
    s.add_argument("port", type=int)
    s.add_argument("settings")
    c = sub.add_parser("clear-fault")
    c.add_argument("port", type=int)
    sub.add_parser("stats")
    args = p.parse_args(argv)
    client = ControlClient(args.socket)
    try:
        if args.cmd == "set-fault":
            port, fault = parse_fault(f"{args.port}:{args.settings}")
            client.set_fault(port, fault.drop, fault.delay_ms)
        elif args.cmd == "clear-fault":
            client.clear_fault(args.port)
        else:
            print(json.dumps(client.stats(), indent=2))
    except (ControlError, FaultError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
