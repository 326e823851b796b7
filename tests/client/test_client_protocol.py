"""AsyncClient against a scripted UDP server: retries, timeouts, matching, double reads."""

from __future__ import annotations

import asyncio

import pytest

from netmigrate.client import (
    DEFAULT_DEADLINE,
    AsyncClient,
    ClientClosed,
    NetMigrateError,
    OutcomeUnknown,
    RetryBudgetSpent,
    ServerError,
    Timeout,
    TooLarge,
)
from netmigrate.protocol.codec import (
    Empty,
    ErrorReply,
    HeaderFields,
    IntReply,
    MGetReply,
    SetReply,
    ValueReply,
    decode_fields,
    encode_reply,
)
from netmigrate.protocol.constants import (
    F_FLAGS,
    F_OP,
    F_REQUEST_ID,
    F_SLOT,
    REPLY_BIT,
    UDP_MAX_PAYLOAD,
    Flag,
    Op,
    Status,
)
from netmigrate.protocol.slot import key_slot

KS = 50000


class Server:
    """The test's side of the wire: read the client's requests, answer as scripted."""

    def __init__(self, peer) -> None:
        self.peer = peer

    async def request(self, timeout: float = 2.0) -> tuple[HeaderFields, object, tuple]:
        data, addr = await self.peer.recv(timeout)
        fields, body = decode_fields(data)
        return fields, body, addr

    def answer(
        self,
        fields: HeaderFields,
        addr: tuple,
        body: object,
        status: Status = Status.OK,
        flags: int | None = None,
        request_id: int | None = None,
        op: int | None = None,
    ) -> None:
        f = list(fields)
        if flags is not None:
            f[F_FLAGS] = flags
        if request_id is not None:
            f[F_REQUEST_ID] = request_id
        if op is not None:
            f[F_OP] = op
        self.peer.send(encode_reply(tuple(f), status, body), addr)


@pytest.fixture
async def pair(udp_peer):
    peer = await udp_peer()
    client = AsyncClient(peer.address, KS, timeout=0.15, retries=2, backoff=0.01)
    await client.open()
    try:
        yield client, Server(peer)
    finally:
        client.close()


async def test_request_fields(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("some{tag}key"))
    fields, body, addr = await server.request()
    assert fields[F_OP] == Op.GET and fields[F_SLOT] == key_slot(b"tag")
    assert fields[F_REQUEST_ID] >> 32 == client.client_id
    assert body.key == b"some{tag}key"
    assert fields[F_FLAGS] == 0
    server.answer(fields, addr, ValueReply(b"v"))
    assert await task == b"v"


async def test_lost_request_is_resent_with_retry_flag_and_same_id(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.incrby("n", 5))
    first, _, _ = await server.request()  # dropped: no answer
    second, _, addr = await server.request()
    assert second[F_REQUEST_ID] == first[F_REQUEST_ID]
    assert first[F_FLAGS] == 0 and second[F_FLAGS] == Flag.RETRY
    server.answer(second, addr, IntReply(5))
    assert await task == 5
    assert client.stats.retries == 1


async def test_timeout_after_all_attempts(pair) -> None:
    client, server = pair
    with pytest.raises(Timeout) as err:
        await client.get("k")
    assert err.value.attempts == 3
    copies = [await server.request() for _ in range(3)]
    assert len({f[F_REQUEST_ID] for f, _, _ in copies}) == 1
    await server.peer.expect_silence(0.2)
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, NetMigrateError)
    assert isinstance(err.value, OutcomeUnknown) and err.value.outcome_unknown
    assert client.stats.timeouts == 1


async def test_late_duplicate_and_foreign_replies_are_ignored(pair) -> None:
    client, server = pair
    t1 = asyncio.create_task(client.get("a"))
    f1, _, addr = await server.request()
    t2 = asyncio.create_task(client.get("b"))
    f2, _, _ = await server.request()
    # Answers in reverse order: each request gets its own.
    server.answer(f2, addr, ValueReply(b"B"))
    server.answer(f1, addr, ValueReply(b"A"))
    assert (await t1, await t2) == (b"A", b"B")
    # Duplicates and late copies of finished requests, a reply for an id never sent, and a
    # reply whose op does not match its id: none may complete the next request.
    t3 = asyncio.create_task(client.get("c"))
    f3, _, _ = await server.request()
    server.answer(f1, addr, ValueReply(b"stale A"))
    server.answer(f2, addr, ValueReply(b"stale B"))
    server.answer(f3, addr, ValueReply(b"x"), request_id=f3[F_REQUEST_ID] ^ 1)
    server.answer(f3, addr, SetReply(True), op=Op.SET | REPLY_BIT)
    await asyncio.sleep(0.05)
    assert not t3.done()
    server.answer(f3, addr, ValueReply(b"C"))
    server.answer(f3, addr, ValueReply(b"C again"))
    assert await t3 == b"C"
    await asyncio.sleep(0.02)
    assert client.stats.unmatched == 4  # two stale, one foreign id, one duplicate
    assert client.stats.mismatched == 1


async def test_retryable_statuses_are_retried_after_backoff(pair) -> None:
    client, server = pair
    for status in (Status.WRONG_OWNER, Status.BUSY, Status.MISS):
        task = asyncio.create_task(client.set("k", "v"))
        fields, _, addr = await server.request()
        server.answer(fields, addr, ErrorReply("not here"), status=status)
        again, _, addr = await server.request()
        assert again[F_REQUEST_ID] == fields[F_REQUEST_ID] and again[F_FLAGS] == Flag.RETRY
        server.answer(again, addr, SetReply(True))
        assert await task is True


async def test_retryable_status_exhausted_raises_server_error(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    for _ in range(3):
        fields, _, addr = await server.request()
        server.answer(fields, addr, ErrorReply("moving"), status=Status.BUSY)
    with pytest.raises(ServerError) as err:
        await task
    assert err.value.status == Status.BUSY and err.value.retryable
    assert err.value.message == "moving"
    # An earlier attempt may have been applied where the reply got lost: unknown outcome.
    assert isinstance(err.value, RetryBudgetSpent) and err.value.outcome_unknown
    assert err.value.attempts == 3


@pytest.mark.parametrize(
    "status", [Status.ERROR, Status.CROSSSLOT, Status.BAD_REQUEST], ids=lambda s: s.name
)
async def test_other_errors_are_raised_at_once(pair, status: Status) -> None:
    client, server = pair
    task = asyncio.create_task(client.incrby("k", 1))
    fields, _, addr = await server.request()
    server.answer(fields, addr, ErrorReply("nope"), status=status)
    with pytest.raises(ServerError) as err:
        await task
    assert err.value.status == status and not err.value.retryable
    assert not err.value.outcome_unknown  # the agent's answer: nothing was applied
    await server.peer.expect_silence(0.2)  # not retried


async def test_double_read_target_answer_wins_even_if_owner_answers_first(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    fields, _, addr = await server.request()
    owner = Flag.DOUBLE_READ
    target = Flag.DOUBLE_READ | Flag.TO_TARGET
    server.answer(fields, addr, ValueReply(b"old at A"), flags=owner)
    await asyncio.sleep(0.03)
    assert not task.done()  # A's answer alone is not enough
    server.answer(fields, addr, ValueReply(b"new at B"), flags=target)
    assert await task == b"new at B"


async def test_double_read_authoritative_target_first_needs_no_owner(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    fields, _, addr = await server.request()
    server.answer(
        fields, addr, ValueReply(None), Status.NOT_FOUND, flags=Flag.DOUBLE_READ | Flag.TO_TARGET
    )
    assert await task is None  # deleted at B: authoritative, whatever A says
    server.answer(fields, addr, ValueReply(b"old"), flags=Flag.DOUBLE_READ)
    await asyncio.sleep(0.02)
    assert client.stats.unmatched == 1


async def test_double_read_target_miss_takes_the_owner(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.mget(["{t}a", "{t}b"]))
    fields, _, addr = await server.request()
    server.answer(
        fields,
        addr,
        ErrorReply("not copied yet"),
        Status.MISS,
        flags=Flag.DOUBLE_READ | Flag.TO_TARGET,
    )
    await asyncio.sleep(0.03)
    assert not task.done()  # waits for A
    server.answer(fields, addr, MGetReply((b"1", None)), flags=Flag.DOUBLE_READ)
    assert await task == [b"1", None]
    assert client.stats.retries == 0


@pytest.mark.parametrize(
    "status", [Status.BUSY, Status.ERROR, Status.WRONG_OWNER], ids=lambda s: s.name
)
async def test_double_read_target_error_is_retried_never_the_owners_copy(
    pair, status: Status
) -> None:
    """B acknowledged a newer write but cannot read it now (its Redis connection dropped):
    A's frozen copy must not be the answer; the read is retried (issue #12, item 1)."""
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    fields, _, addr = await server.request()
    server.answer(fields, addr, ValueReply(b"frozen v1 at A"), flags=Flag.DOUBLE_READ)
    server.answer(
        fields, addr, ErrorReply("Redis away"), status, flags=Flag.DOUBLE_READ | Flag.TO_TARGET
    )
    again, _, addr = await server.request()
    assert again[F_REQUEST_ID] == fields[F_REQUEST_ID] and again[F_FLAGS] == Flag.RETRY
    assert not task.done()
    server.answer(again, addr, ValueReply(b"frozen v1 at A"), flags=Flag.DOUBLE_READ)
    server.answer(again, addr, ValueReply(b"v2 at B"), flags=Flag.DOUBLE_READ | Flag.TO_TARGET)
    assert await task == b"v2 at B"


async def test_double_read_missing_copy_times_out_and_retries(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    fields, _, addr = await server.request()
    server.answer(fields, addr, ValueReply(b"old"), flags=Flag.DOUBLE_READ)  # B's copy lost
    again, _, addr = await server.request()
    assert again[F_FLAGS] == Flag.RETRY
    server.answer(again, addr, ValueReply(b"fresh"))  # migration done: a plain reply
    assert await task == b"fresh"


async def test_many_outstanding_requests_on_one_client(pair) -> None:
    client, server = pair
    n = 200
    tasks = [asyncio.create_task(client.incrby(f"k{i}", i)) for i in range(n)]
    requests = [await server.request() for _ in range(n)]
    for fields, body, addr in reversed(requests):
        server.answer(fields, addr, IntReply(body.delta * 10))
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(n)]
    assert len({f[F_REQUEST_ID] for f, _, _ in requests}) == n


async def test_cross_slot_mget_and_mset_are_split_per_slot(pair) -> None:
    client, server = pair
    keys = ["{a}1", "{b}1", "{a}2", "{c}1"]
    task = asyncio.create_task(client.mget(keys))
    parts = [await server.request() for _ in range(3)]
    assert {f[F_SLOT] for f, _, _ in parts} == {key_slot(k) for k in (b"a", b"b", b"c")}
    for fields, body, addr in parts:
        server.answer(fields, addr, MGetReply(tuple(k.upper() for k in body.keys)))
    assert await task == [b"{A}1", b"{B}1", b"{A}2", b"{C}1"]

    task = asyncio.create_task(client.mset({"{a}1": "x", "{b}1": "y", "{a}2": "z"}))
    parts = [await server.request() for _ in range(2)]
    items = sorted(body.items for _, body, _ in parts)
    assert items == [((b"{a}1", b"x"), (b"{a}2", b"z")), ((b"{b}1", b"y"),)]
    for fields, _, addr in parts:
        server.answer(fields, addr, Empty())
    assert await task is None


async def test_too_large_is_raised_before_sending(udp_peer) -> None:
    peer = await udp_peer()
    async with AsyncClient(peer.address, KS, max_datagram=200) as client:
        with pytest.raises(TooLarge) as err:
            await client.set("k", b"x" * 200)
        assert err.value.limit == 200 and err.value.size > 200
        # An mset with one oversized slot sends nothing at all, not even the small slots.
        with pytest.raises(TooLarge):
            await client.mset({"{a}small": "1", "{b}big": b"x" * 300})
        await peer.expect_silence(0.2)
        assert client.stats.sent == 0


async def test_max_datagram_defaults_to_the_route_mtu(udp_peer) -> None:
    """Unset, the limit is the route's MTU minus IPv4 + UDP (loopback: UDP's own cap); the
    same holds for a socket from a factory (it may live in another namespace)."""
    import socket

    peer = await udp_peer()
    async with AsyncClient(peer.address, KS) as client:
        assert client.max_datagram == UDP_MAX_PAYLOAD
    made: list[socket.socket] = []

    async def factory() -> socket.socket:
        made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        made[-1].bind(("127.0.0.1", 0))
        return made[-1]

    async with AsyncClient(peer.address, KS, socket_factory=factory) as client:
        assert client.max_datagram == UDP_MAX_PAYLOAD
        assert client.local_address == made[0].getsockname()
        assert made[1].fileno() == -1  # the probe is closed
    async with AsyncClient(peer.address, KS, max_datagram=1472) as client:
        assert client.max_datagram == 1472
    with pytest.raises(ValueError, match="max_datagram"):
        AsyncClient(peer.address, KS, max_datagram=63)


async def test_argument_errors(pair) -> None:
    client, _ = pair
    with pytest.raises(ValueError, match="nx and xx"):
        await client.set("k", "v", nx=True, xx=True)
    with pytest.raises(ValueError, match="ttl_ms"):
        await client.set("k", "v", ttl_ms=-5)
    with pytest.raises(TypeError, match="key must be"):
        await client.get(1.5)  # type: ignore[arg-type]
    assert await client.mget([]) == []
    closed = AsyncClient(("127.0.0.1", 9), KS)
    with pytest.raises(NetMigrateError, match="not open"):
        await closed.get("k")


async def test_close_fails_outstanding_requests(pair) -> None:
    client, server = pair
    task = asyncio.create_task(client.get("k"))
    await server.request()
    client.close()
    with pytest.raises(ClientClosed, match="closed") as err:
        await task
    assert err.value.outcome_unknown  # the request was on the wire


async def test_event_hook_and_socket_factory(udp_peer) -> None:
    """``on_event`` hears every retry the client makes and every steered reply;
    ``socket_factory`` makes the socket the client uses."""
    import socket

    peer = await udp_peer()
    server = Server(peer)
    made: list[socket.socket] = []

    async def factory() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        made.append(sock)
        return sock

    events: list[str] = []
    client = AsyncClient(
        peer.address,
        KS,
        timeout=0.1,
        retries=3,
        backoff=0.001,
        socket_factory=factory,
        on_event=events.append,
    )
    async with client:
        assert made and client.local_address == made[0].getsockname()
        task = asyncio.create_task(client.get("k"))
        await server.request()  # lost: a timeout resend
        fields, _, addr = await server.request()
        server.answer(fields, addr, ErrorReply("moving"), Status.WRONG_OWNER)
        fields, _, addr = await server.request()
        server.answer(fields, addr, ValueReply(b"b"), flags=Flag.DOUBLE_READ | Flag.TO_TARGET)
        server.answer(fields, addr, ValueReply(b"a"), flags=Flag.DOUBLE_READ)
        assert await task == b"b"
        task = asyncio.create_task(client.set("k", "v"))
        fields, _, addr = await server.request()
        server.answer(fields, addr, SetReply(True), flags=Flag.TO_TARGET)
        assert await task is True
    assert events == ["TIMEOUT_RETRY", "WRONG_OWNER", "DOUBLE_READ", "TO_TARGET"]


async def test_the_retry_budget_is_time_and_covers_a_slot_transition(udp_peer) -> None:
    """Issue #12, item 10: WRONG_OWNER for a whole transition (here 300 ms, many answers)
    must not exhaust the budget. The old budget (5 attempts, 2 ms doubling backoff: 30 ms)
    reported such a write as failed although a later attempt would have applied it."""
    peer = await udp_peer()
    server = Server(peer)
    async with AsyncClient(peer.address, KS, timeout=0.15) as client:
        assert client.retries is None and client.deadline == DEFAULT_DEADLINE
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(client.set("k", "v"))
        end = loop.time() + 0.3
        answered = 0
        while True:
            fields, _, addr = await server.request()
            if loop.time() >= end:
                break
            server.answer(fields, addr, ErrorReply("moving"), status=Status.WRONG_OWNER)
            answered += 1
        server.answer(fields, addr, SetReply(True))
        assert await task is True
        assert answered > 5


async def test_the_deadline_ends_the_call_as_an_unknown_outcome(udp_peer) -> None:
    peer = await udp_peer()
    server = Server(peer)
    async with AsyncClient(peer.address, KS, timeout=0.05, deadline=0.25) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        task = asyncio.create_task(client.incrby("n", 1))
        attempts = 0
        while not task.done():
            try:
                fields, _, addr = await server.request(timeout=0.3)
            except TimeoutError:
                break
            attempts += 1
            server.answer(fields, addr, ErrorReply("busy"), status=Status.BUSY)
        with pytest.raises(RetryBudgetSpent) as err:
            await task
        assert 0.25 <= loop.time() - start < 0.6
        assert err.value.outcome_unknown and err.value.status == Status.BUSY
        assert err.value.attempts == attempts > 5
        # Silence instead of answers: a Timeout at the deadline, also an unknown outcome.
        start = loop.time()
        with pytest.raises(Timeout) as timeout:
            await client.set("k", "v")
        assert 0.25 <= loop.time() - start < 0.4
        assert timeout.value.outcome_unknown and timeout.value.attempts >= 5


def test_errors_that_changed_nothing_say_so() -> None:
    assert not TooLarge(10, 5).outcome_unknown
    assert not ServerError(Status.CROSSSLOT, "").outcome_unknown
    assert not NetMigrateError("client is not open").outcome_unknown


def test_the_deadline_leaves_room_for_retries_within_the_agents_record_ttl() -> None:
    """Every retry of a call must reach an agent that still holds the request's record
    (at-most-once, D16): deadline + one attempt's timeout below the record TTL, with room."""
    from netmigrate.agent.dedup import RECORD_TTL_MS

    default_timeout = AsyncClient(("127.0.0.1", 9), KS).timeout
    assert DEFAULT_DEADLINE + default_timeout < RECORD_TTL_MS / 1000 / 1.5


async def test_many_quick_retryable_answers_within_the_deadline(udp_peer) -> None:
    """A zero backoff and instant BUSY answers: thousands of attempts fit the deadline; the
    backoff arithmetic must not overflow on the way (2 ** 1024)."""
    peer = await udp_peer()
    server = Server(peer)
    async with AsyncClient(peer.address, KS, backoff=0.0, deadline=10) as client:
        task = asyncio.create_task(client.get("k"))
        for _ in range(1100):
            fields, _, addr = await server.request()
            server.answer(fields, addr, ErrorReply("busy"), status=Status.BUSY)
        fields, _, addr = await server.request()
        server.answer(fields, addr, ValueReply(b"v"))
        assert await task == b"v"
