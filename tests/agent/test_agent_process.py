"""The real `netmigrate agent` command as a subprocess: secrets, refusals, restarts."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netmigrate.agent.redis_node import RedisNodeError
from netmigrate.client import Client
from netmigrate.protocol.slot import key_slot

PASSWORD = "s3cret-Pa55word-4-tests"


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    log: Path
    udp: tuple[str, int] | None = None
    control: int | None = None

    def log_text(self) -> str:
        return self.log.read_text()


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "netmigrate.cli", "agent", *args]


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator:
    """Factory: start `netmigrate agent ARGS...`; waits for READY (or exit). Always stopped."""
    started: list[AgentProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, expect_ready: bool = True):
        log = tmp_path / f"agent-{len(started)}.log"
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                _command(*args),
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, **(env or {})},
            )
        agent = AgentProcess(proc, log)
        started.append(agent)
        if not expect_ready:
            proc.wait(30)
            return agent
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        assert line.startswith("READY"), f"agent did not start: {line!r}\n{agent.log_text()}"
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        host, _, port = fields["udp"].rpartition(":")
        agent.udp = (host, int(port))
        agent.control = int(fields["control"]) if "control" in fields else None
        return agent

    try:
        yield start
    finally:
        for agent in started:
            if agent.proc.poll() is None:
                agent.proc.kill()
                agent.proc.wait()
            if agent.proc.stdout:
                agent.proc.stdout.close()


def _stop(agent: AgentProcess) -> int:
    agent.proc.send_signal(signal.SIGTERM)
    return agent.proc.wait(10)


def _agent_stats(control: int) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmigrate.cli",
            "agent-stats",
            "--control",
            f"127.0.0.1:{control}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_acl_user_password_never_logged_and_ownership_persists(
    redis_server, agent_process, tmp_path: Path
) -> None:
    server = redis_server(cluster=True, username="nmagent", password=PASSWORD)
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    common = ["--listen", "127.0.0.1:0", "--keyspace", "50000", "--server-id", "7"]
    common += ["--control", "127.0.0.1:0", "--log-level", "DEBUG"]
    url = server.url_without_password  # redis://nmagent@127.0.0.1:PORT

    first = agent_process(
        "--redis", url, "--redis-password-file", str(secret), "--slots", "0-8191", *common
    )
    owned, foreign = b"k-own", b"k-foreign"
    while key_slot(owned) > 8191:
        owned += b"!"
    while key_slot(foreign) <= 8191:
        foreign += b"!"
    with Client(first.udp, 50000, timeout=0.5, retries=1) as client:
        assert client.set(owned, b"v1") is True
        assert client.incrby(owned + b":n", 2) == 2
        assert client.get(owned) == b"v1"
    assert server.client().get(owned) == b"v1"
    stats = _agent_stats(first.control)
    assert "server 7" in stats and "slots owned: 8192 (0-8191)" in stats
    assert "redis://nmagent:***@127.0.0.1" in stats
    assert _stop(first) == 0

    # Restart with another --slots and the password from the environment: the persisted
    # ownership wins, and the password appears nowhere in either log.
    second = agent_process(
        "--redis", url, "--slots", "all", *common, env={"NETMIGRATE_REDIS_PASSWORD": PASSWORD}
    )
    assert "slots owned: 8192 (0-8191)" in _agent_stats(second.control)
    with Client(second.udp, 50000, timeout=0.3, retries=1) as client:
        assert client.get(owned) == b"v1"
        with pytest.raises(Exception, match="WRONG_OWNER"):
            client.set(foreign, b"x")
    assert _stop(second) == 0
    for agent in (first, second):
        text = agent.log_text()
        assert "ownership" in text and "redis://nmagent:***@" in text  # it did log the URL
        assert PASSWORD not in text


def test_wrong_password_is_a_clear_error_without_the_secret(redis_server, agent_process) -> None:
    server = redis_server(cluster=True, password=PASSWORD)
    wrong = PASSWORD + "-wrong"
    agent = agent_process(
        "--redis", f"redis://:{wrong}@127.0.0.1:{server.port}",
        "--listen", "127.0.0.1:0", "--keyspace", "1", "--server-id", "1",
        expect_ready=False,
    )  # fmt: skip
    assert agent.proc.returncode == 1
    text = agent.log_text()
    assert "invalid" in text.lower() or "auth" in text.lower()
    assert wrong not in text and PASSWORD not in text


def test_redis_without_cluster_mode_is_refused(redis_server, agent_process) -> None:
    server = redis_server(cluster=False)
    agent = agent_process(
        "--redis", server.url, "--listen", "127.0.0.1:0", "--keyspace", "1", "--server-id", "1",
        expect_ready=False,
    )  # fmt: skip
    assert agent.proc.returncode == 1
    assert "cluster-enabled yes" in agent.log_text()
    assert server.client().dbsize() == 0  # nothing written


def test_bad_arguments_exit_2(agent_process) -> None:
    agent = agent_process(
        "--redis", "redis://127.0.0.1:1", "--listen", "127.0.0.1:0", "--keyspace", "1",
        "--server-id", "255", expect_ready=False,
    )  # fmt: skip
    assert agent.proc.returncode == 2
    assert "--server-id 255 out of range" in agent.log_text()


async def test_agent_refuses_a_member_of_a_multi_node_cluster(redis_server, agent_factory) -> None:
    a, b = redis_server(cluster=True), redis_server(cluster=True)
    a.client().execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.cluster_port)
    deadline = time.monotonic() + 10
    while b"cluster_known_nodes:2" not in b.client().execute_command("CLUSTER", "INFO"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(RedisNodeError, match="multi-node"):
        await agent_factory(b)
    assert b.client().dbsize() == 0  # no ownership state written either


async def test_other_identity_on_the_same_redis_is_refused(cluster_redis, agent_factory) -> None:
    from netmigrate.agent.slot_store import AgentStateError

    first = await agent_factory(cluster_redis, server_id=1)
    await first.stop()
    with pytest.raises(AgentStateError, match="keyspace 50000 server 1"):
        await agent_factory(cluster_redis, server_id=2)
