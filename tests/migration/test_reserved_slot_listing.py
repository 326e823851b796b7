"""The reserved slot is a slot of the keyspace too: the agent's request-id records (D16) keep
arriving in it while it is frozen, and its client keys must all be copied anyway."""

from __future__ import annotations

from migration_helpers import keys_in

from netmigrate.agent.reserved import RESERVED_SLOT, request_id_key


async def test_listing_a_frozen_reserved_slot_misses_no_client_key(pair) -> None:
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
    (listed,) = await src.list_keys([RESERVED_SLOT])
    assert sorted(listed) == sorted(keys)
    assert calls >= 3  # the first listing came back full and was asked again
