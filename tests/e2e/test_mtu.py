"""No fragmentation, ever (issue #12 item 7): the client's link has MTU 1500, the lab's 9000.

The keyspace's largest datagram is 1472 (1500 - 20 IPv4 - 8 UDP) on both ends: the client
derives it from its route to the service, the agents get it as the keyspace setting. A 4 KB SET
to a moved slot raises TooLarge at once with nothing sent (a fragmented request would be
steered in pieces the switch cannot parse: WRONG_OWNER / timeouts until the deadline), and a
GET of a value whose reply would not fit answers TOO_LARGE instead of a reply the client's
link drops.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmigrate.client import AsyncClient, ServerError, TooLarge
from netmigrate.lab.stack import Stack, StackConfig, free_control_base, free_tcp_port
from netmigrate.migration import MigrationOptions, run
from netmigrate.netns import call_in_netns
from netmigrate.protocol.constants import Status
from netmigrate.protocol.slot import key_slot

from .conftest import agent, keyspace, redis_of, switch

CLIENT_MTU = 1500
LIMIT = CLIENT_MTU - 28


@pytest.fixture(scope="module")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    tag = secrets.token_hex(2)
    return StackConfig(
        prefix=f"nmt9-{tag}",
        run_dir=Path(f"/run/netmigrate-lab/nmt9-{tag}"),
        grpc_port=free_tcp_port(),
        control_base=free_control_base(),
        agent_args=("--max-datagram", str(LIMIT)),
    )


@pytest.fixture(scope="module")
def small_mtu_stack(stack: Stack) -> Iterator[Stack]:
    """The stack with the client's link (only) at MTU 1500."""
    route = subprocess.run(
        ["ip", "-n", stack.client_netns, "-o", "route", "get", stack.service_ip],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    dev = route[route.index("dev") + 1]
    subprocess.run(
        ["ip", "-n", stack.client_netns, "link", "set", "dev", dev, "mtu", str(CLIENT_MTU)],
        check=True,
    )
    yield stack


def _client(stack: Stack) -> AsyncClient:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        return sock

    async def factory() -> socket.socket:
        return await asyncio.to_thread(call_in_netns, stack.client_netns, make)

    return AsyncClient(
        stack.service, stack.keyspace_id, timeout=0.2, deadline=2.0, socket_factory=factory
    )


def _key_in(slot: int, tag: str) -> str:
    for i in range(1_000_000):
        key = f"{tag}{i}"
        if key_slot(key) == slot:
            return key
    raise AssertionError("no key for the slot")


async def _move(stack: Stack, slot: int) -> None:
    result = await run(
        agent(stack, 1),
        agent(stack, 2),
        [slot],
        keyspace=keyspace(stack),
        switch=switch(stack),
        options=MigrationOptions(grace=0.1),
        timeout=120,
    )
    assert result.state == "FINALIZED", result.message


@pytest.mark.timeout(300)
def test_large_request_to_a_moved_slot_is_too_large_at_once(small_mtu_stack: Stack) -> None:
    stack = small_mtu_stack
    slot = 4242
    key = _key_in(slot, "mtu:")

    async def scenario() -> None:
        await _move(stack, slot)
        async with _client(stack) as c:
            # Fits: served by the slot's new owner over the small link.
            assert await c.set(key, b"s" * 1000) is True
            assert await c.get(key) == b"s" * 1000
            sent = c.stats.sent
            began = time.monotonic()
            with pytest.raises(TooLarge) as err:
                await c.set(key, b"v" * 4096)
            assert time.monotonic() - began < 0.05
            assert not err.value.outcome_unknown
            assert c.stats.sent == sent  # nothing went on the wire
            assert c.max_datagram == LIMIT  # derived from the client's route
            assert await c.get(key) == b"s" * 1000

    asyncio.run(scenario())
    assert redis_of(stack, 2).get(key) == b"s" * 1000


@pytest.mark.timeout(300)
def test_reply_that_would_not_fit_answers_too_large(small_mtu_stack: Stack) -> None:
    stack = small_mtu_stack
    slot = 777
    key = _key_in(slot, "mtu-big:")

    async def scenario() -> None:
        await _move(stack, slot)
        # Stored past the agents (e.g. by a client of a keyspace with a larger setting).
        redis_of(stack, 2).set(key, b"w" * 4096)
        async with _client(stack) as c:
            began = time.monotonic()
            with pytest.raises(ServerError) as err:
                await c.get(key)
            assert err.value.status == Status.TOO_LARGE
            assert c.stats.timeouts == 0  # answered, not a reply the link dropped
            assert time.monotonic() - began < 1.0

    asyncio.run(scenario())
