"""The agent runs its whole migration path as the restricted ACL user the roles make
(``redis_node_agent_rules`` of roles/redis_node, read from the role itself), and that user can
do nothing administrative. Real redis-servers whose ``default`` user is off, real agents.

Every migration here ends with Redis' ``ACL LOG`` empty on both servers: not one command of
the agent (its scripts' calls included) was refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import test_migration_faults
import test_migration_under_load
import yaml
from migration_helpers import keys_in, pair_factory

from netmigrate import migration
from netmigrate.migration import MigrationOptions
from netmigrate.rediscmd.table import CommandTable, Kind

ROLE_DEFAULTS = Path(__file__).parents[2] / "roles" / "redis_node" / "defaults" / "main.yml"
_DEFAULTS = yaml.safe_load(ROLE_DEFAULTS.read_text())
AGENT_RULES: list[str] = _DEFAULTS["redis_node_agent_rules"]
#: The user tests/conftest.py's factory makes with ``agent_rules`` is the role's agent user.
AGENT_USER: str = _DEFAULTS["redis_node_agent_user"]
ADMIN = "admin"


@pytest.fixture(scope="module")
def acl_servers(redis_server_session) -> tuple[Any, Any]:
    """Two cluster nodes: ``default`` off, an admin (the tests' own client) and the agent
    user with the role's rules (what the agents log in as)."""
    servers = []
    for _ in range(2):
        s = redis_server_session(
            cluster=True, username=ADMIN, password=secrets.token_hex(8), agent_rules=AGENT_RULES
        )
        s.assign_all_slots()
        servers.append(s)
    return servers[0], servers[1]


@pytest_asyncio.fixture
async def acl_pair(acl_servers) -> AsyncIterator[Any]:
    for s in acl_servers:
        admin = s.client()
        admin.flushall()
        admin.execute_command("ACL", "LOG", "RESET")
    async with pair_factory(acl_servers) as make:
        yield make
    for s in acl_servers:
        refused = s.client().execute_command("ACL", "LOG")
        assert not refused, f"the agent user was refused: {refused}"


def _agent_client(server: Any) -> redis.Redis:
    c = redis.Redis(
        host=server.host, port=server.port, username=AGENT_USER, password=server.agent_password
    )
    server._clients.append(c)
    return c


async def test_a_migration_under_load_runs_as_the_agent_user(acl_pair) -> None:
    await test_migration_under_load.test_live_migration_under_load_keeps_every_guarantee(acl_pair)


async def test_abort_and_resume_run_as_the_agent_user(acl_pair) -> None:
    await test_migration_faults.test_abort_leaves_every_slot_wholly_on_one_side_and_resume_finishes(
        acl_pair
    )


async def test_keys_moved_in_pieces_with_their_ttl_as_the_agent_user(acl_pair) -> None:
    """Every type over the chunk size moves in pieces (HSCAN / SSCAN / ZSCAN / LRANGE, the
    restore scripts' RENAME and PEXPIRE), next to small keys."""
    p = await acl_pair(copy_chunk_bytes=16 << 10, copy_batch_bytes=64 << 10)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    slot = 901
    h, lst, st, z = keys_in(slot, 4, "big")
    small = keys_in(slot, 20, "small")
    blob = os.urandom(200)
    ra.hset(h, mapping={b"f%d" % i: blob for i in range(1000)})
    ra.rpush(lst, *[blob + b"%d" % i for i in range(1000)])
    ra.sadd(st, *[blob + b"%d" % i for i in range(1000)])
    ra.zadd(z, {blob + b"%d" % i: i for i in range(1000)})
    ra.pexpire(h, 600_000)
    for k in small:
        ra.set(k, b"v")

    result = await migration.run(
        p.source_ep,
        p.target_ep,
        [slot],
        keyspace=p.keyspace,
        options=MigrationOptions(grace=0, poll=0.05),
    )
    assert result.state == "FINALIZED", result.message
    assert p.source.source.counters["source_pieces"] > 4
    assert rb.hlen(h) == rb.llen(lst) == rb.scard(st) == rb.zcard(z) == 1000
    assert 590_000 < rb.pttl(h) <= 600_000
    assert all(rb.get(k) == b"v" for k in small)
    assert not ra.exists(h, lst, st, z, *small)


def test_the_agent_user_can_do_nothing_administrative(acl_servers) -> None:
    server = acl_servers[0]
    agent = _agent_client(server)
    for command in (
        ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
        ("CONFIG", "GET", "requirepass"),
        ("FLUSHALL",),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "x", "on", ">pw", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
        ("SAVE",),
        ("MODULE", "LIST"),
        ("CLUSTER", "RESET"),
        ("SCRIPT", "FLUSH"),
        ("MIGRATE", "127.0.0.1", "1", "k", "0", "1"),
        ("PUBLISH", "c", "m"),
        ("REPLICAOF", "127.0.0.1", "1"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.execute_command(*command)
    # The server is still a healthy node with its policy unchanged.
    assert server.client().config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


def test_nobody_gets_in_without_credentials(acl_servers) -> None:
    server = acl_servers[0]
    anonymous = redis.Redis(host=server.host, port=server.port)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("k")
    finally:
        anonymous.close()
    wrong = redis.Redis(host=server.host, port=server.port, username=AGENT_USER, password="x")
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()


def test_every_data_command_a_client_may_send_is_allowed(acl_servers) -> None:
    """What the agent accepts from clients (commands on keys of one slot) runs for the agent
    user: the rules take no data command away from clients."""
    admin = acl_servers[0].client()
    admin.response_callbacks.pop("COMMAND", None)
    reply = admin.execute_command("COMMAND")
    table = CommandTable.from_command_reply(reply)
    allowed, refused = [], []
    for args in _one_call_per_command(reply):
        try:
            kind = table.classify(args).kind
        except Exception:  # arguments our synthetic call got wrong: not a client's command
            continue
        if kind not in (Kind.READ, Kind.WRITE):
            continue
        reply = admin.execute_command("ACL", "DRYRUN", AGENT_USER, *args)
        (allowed if reply == b"OK" else refused).append(b" ".join(args[:2]))
    # RESTORE-ASKING is Redis Cluster's own migration command, not a client's.
    assert [r for r in refused if not r.startswith(b"restore-asking")] == []
    assert len(allowed) > 150


def _one_call_per_command(reply: list[Any]) -> list[tuple[bytes, ...]]:
    """A call of every command and subcommand of a raw ``COMMAND`` reply, with "1" for every
    argument (enough for the arity; key positions come from the key specs)."""
    calls = []
    for entry in reply:
        for e in entry[9] or [entry]:  # subcommands, else the command itself
            words = e[0].split(b"|")
            n = max(abs(int(e[1])), len(words) + 1)
            calls.append((*words, *[b"1"] * (n - len(words))))
    return calls
