"""The source's copy reads (``SourceKeys.copy_replies``): one script call per batch that
answers DUMP + PTTL of as many keys as fill a message, marks a key too big for one DUMP
without DUMPing it, and survives Redis forgetting its scripts. A real redis-server in
cluster mode (the keys span slots, as a wave's do)."""

from __future__ import annotations

import pytest

from netmigrate.agent.config import parse_redis_url
from netmigrate.agent.source.keys import BIG, CopyLimits, SourceKeys
from netmigrate.agent.source.model import StepFailed


@pytest.fixture
def server(redis_server):
    s = redis_server(cluster=True)
    s.assign_all_slots()
    return s


async def test_a_batch_stops_at_the_message_bytes_and_skips_big_and_gone_keys(server) -> None:
    r = server.client()
    r.set(b"small:a", b"x" * 100, px=60_000)
    r.set(b"small:b", b"y" * 100)
    r.set(b"big", b"z" * 8192)
    keys = SourceKeys(parse_redis_url(server.url), CopyLimits(batch_bytes=300, chunk_bytes=4096))
    try:
        n, replies = await keys.copy_replies([b"small:a", b"gone", b"big", b"small:b"])
        assert n == 4
        dump_a, pttl_a, gone, pttl_gone, big, pttl_big, dump_b, pttl_b = replies
        assert dump_a == r.dump(b"small:a") and 0 < pttl_a <= 60_000
        assert (gone, pttl_gone) == (None, -2)
        # Above the chunk size: not DUMPed (it moves in pieces), whatever its DUMP would be.
        assert (big, pttl_big) == (None, BIG)
        assert dump_b == r.dump(b"small:b") and pttl_b == -1

        many = [b"k:%d" % i for i in range(50)]
        for k in many:
            r.set(k, b"%d" % hash(k) * 20)
        n, replies = await keys.copy_replies(many)
        sizes = [len(d) for d in replies[::2]]
        # Stops at the first key that brings the DUMPs to the message bytes, never earlier.
        assert 1 < n < len(many)
        assert sum(sizes[:-1]) < 300 <= sum(sizes)
        assert replies[::2] == [r.dump(k) for k in many[:n]]
    finally:
        keys.close()


async def test_the_script_is_loaded_again_after_redis_forgot_it(server) -> None:
    r = server.client()
    r.set(b"k", b"v")
    keys = SourceKeys(parse_redis_url(server.url))
    try:
        assert (await keys.copy_replies([b"k"]))[1][0] == r.dump(b"k")
        r.script_flush()
        assert (await keys.copy_replies([b"k"]))[1][0] == r.dump(b"k")
    finally:
        keys.close()


async def test_a_refused_call_fails_the_step(server) -> None:
    keys = SourceKeys(parse_redis_url(server.url))
    try:
        server.client().execute_command("CLUSTER", "DELSLOTSRANGE", 0, 16383)
        with pytest.raises(StepFailed, match="copy script"):
            await keys.copy_replies([b"k"])
    finally:
        keys.close()


async def test_keys_of_many_slots_are_counted_in_scripts(server) -> None:
    r = server.client()
    keys = [b"count:%d" % i for i in range(3000)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, b"v")
        pipe.execute_command("CLUSTER", "KEYSLOT", k)
    slots = sorted(set(pipe.execute()[1::2]))
    assert len(slots) > 1024  # more than one script call
    counter = SourceKeys(parse_redis_url(server.url))
    try:
        assert await counter.count_keys(list(range(16384))) == 3000
        assert await counter.count_keys(slots[:700]) == sum(
            r.execute_command("CLUSTER", "COUNTKEYSINSLOT", s) for s in slots[:700]
        )
        assert await counter.count_keys([]) == 0
    finally:
        counter.close()


async def test_slots_are_listed_in_bounded_script_calls_and_big_ones_by_commands(
    server, monkeypatch
) -> None:
    from netmigrate.agent.reserved import RESERVED_SLOT, request_id_key
    from netmigrate.agent.source import keys as keys_module

    monkeypatch.setattr(keys_module, "LIST_IN_SCRIPT_MAX", 10)
    r = server.client()
    sizes = {"a": 4, "b": 8, "c": 30, "d": 7, "e": 0}
    want: dict[int, list[bytes]] = {}
    pipe = r.pipeline(transaction=False)
    for tag, n in sizes.items():
        slot = r.execute_command("CLUSTER", "KEYSLOT", tag)
        want[slot] = [b"{%s}:%d" % (tag.encode(), i) for i in range(n)]
        for k in want[slot]:
            pipe.set(k, b"v")
    pipe.set(request_id_key(7), b"r")  # the agent's own: never listed
    pipe.execute()
    lister = SourceKeys(parse_redis_url(server.url))
    calls: list[int] = []
    real = lister.calls

    async def counted(commands: list[bytes]) -> list[object]:
        calls.append(len(commands))
        return await real(commands)

    lister.calls = counted  # type: ignore[method-assign]
    try:
        slots = [*want, 0, RESERVED_SLOT]
        listed = await lister.list_keys(slots)
        assert [sorted(k) for k in listed] == [sorted(want.get(s, [])) for s in slots]
        # 4 + 8 > 10 keys: the slots of 8 and 7 keys come in a second and third call; 30 keys
        # are listed by commands (COUNTKEYSINSLOT, then GETKEYSINSLOT).
        assert len(calls) >= 5
    finally:
        lister.close()
