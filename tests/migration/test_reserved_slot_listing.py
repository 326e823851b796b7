"""The reserved slot is a slot of the keyspace too: the agent's request-id records (D16) keep
arriving in it while it is frozen, and its client keys must all be copied anyway."""

from __future__ import annotations

from migration_helpers import keys_in

from netmigrate.agent.reserved import RESERVED_SLOT, request_id_key


async def test_listing_by_commands_misses_no_client_key_as_records_arrive(pair) -> None:
    """The listing of a slot too big for one script call: a count, then GETKEYSINSLOT."""
    p = await pair()
    ra = p.redis_a.client()
    keys = keys_in(RESERVED_SLOT, 20)
    for k in keys:
        ra.set(k, b"v")
    src = p.source.source._ctx.keys  # the source's reads of its Redis
    real = src.calls
    calls = 0

    async def records_arrive_after_the_count(commands: list[bytes]) -> list[object]:
        nonlocal calls
        out = await real(commands)
        calls += 1
        if calls == 1:  # between COUNTKEYSINSLOT and GETKEYSINSLOT, as writes elsewhere do
            pipe = ra.pipeline(transaction=False)
            for i in range(1000):
                pipe.set(request_id_key(10_000 + i), b"r", px=60_000)
            pipe.execute()
        return out

    src.calls = records_arrive_after_the_count  # type: ignore[method-assign]
    (listed,) = await src._list_by_commands([RESERVED_SLOT])
    assert sorted(listed) == sorted(keys)
    assert calls >= 3  # the first listing came back full and was asked again


async def test_a_listing_in_one_script_call_is_exact_among_many_records(pair) -> None:
    """The usual listing counts and lists in one atomic script call: nothing arrives in
    between, and the agent's records in the slot are not listed."""
    p = await pair()
    ra = p.redis_a.client()
    keys = keys_in(RESERVED_SLOT, 20)
    pipe = ra.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, b"v")
    for i in range(1000):
        pipe.set(request_id_key(20_000 + i), b"r", px=60_000)
    pipe.execute()
    src = p.source.source._ctx.keys
    real = src.calls
    calls = 0

    async def counted(commands: list[bytes]) -> list[object]:
        nonlocal calls
        calls += 1
        return await real(commands)

    src.calls = counted  # type: ignore[method-assign]
    listed = await src.list_keys([RESERVED_SLOT, 0, 1])
    assert sorted(listed[0]) == sorted(keys)
    assert calls == 1
