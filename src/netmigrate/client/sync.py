"""The blocking NetMigrate client: the asyncio client driven by a private event loop.

One code path for both clients (ids, retries, merge), so they cannot drift apart. A ``Client``
belongs to one thread and must not be used from inside a running event loop (use
``AsyncClient`` there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from netmigrate.client.aio import AsyncClient, Key, Value
from netmigrate.client.errors import NetMigrateError

T = TypeVar("T")


class Client:
    """Blocking client of one keyspace; same options as :class:`AsyncClient`."""

    def __init__(self, address: tuple[str, int], keyspace: int, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._aio = AsyncClient(address, keyspace, **options)
        try:
            self._run(self._aio.open())
        except BaseException:
            self._loop.close()
            raise

    @property
    def aio(self) -> AsyncClient:
        """The underlying asyncio client (its stats, ids, options)."""
        return self._aio

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if asyncio._get_running_loop() is not None:
            coro.close()
            raise NetMigrateError("Client blocks: inside a running event loop use AsyncClient")
        if self._loop.is_closed():
            coro.close()
            raise NetMigrateError("client is closed")
        return self._loop.run_until_complete(coro)

    def get(self, key: Key, **kw: Any) -> bytes | None:
        return self._run(self._aio.get(key, **kw))

    def set(self, key: Key, value: Value, **kw: Any) -> bool:
        return self._run(self._aio.set(key, value, **kw))

    def delete(self, key: Key, **kw: Any) -> int:
        return self._run(self._aio.delete(key, **kw))

    def incrby(self, key: Key, delta: int = 1, **kw: Any) -> int:
        return self._run(self._aio.incrby(key, delta, **kw))

    def mget(self, keys: Iterable[Key], **kw: Any) -> list[bytes | None]:
        return self._run(self._aio.mget(keys, **kw))

    def mset(self, items: Mapping[Key, Value] | Iterable[tuple[Key, Value]], **kw: Any) -> None:
        return self._run(self._aio.mset(items, **kw))

    def execute(self, *args: Value, **kw: Any) -> Any:
        """Any Redis command of one slot (see :meth:`AsyncClient.execute`)."""
        return self._run(self._aio.execute(*args, **kw))

    def execute_raw(self, *args: Value, **kw: Any) -> bytes:
        return self._run(self._aio.execute_raw(*args, **kw))

    def transaction(self, commands: Iterable[Iterable[Value]], **kw: Any) -> list[Any]:
        """Commands on keys of one slot, atomically (see :meth:`AsyncClient.transaction`)."""
        return self._run(self._aio.transaction(commands, **kw))

    def pipeline(self) -> Pipeline:
        """Queue operations, then send them all at once with :meth:`Pipeline.execute`."""
        return Pipeline(self)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._aio.close()
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pipeline:
    """Operations queued on a :class:`Client` and sent together, all outstanding at once.

    Each method returns the pipeline (chainable); :meth:`execute` returns the results in
    order. Requests are independent: there is no atomicity across them.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def _queue(self, name: str, *args: Any, **kw: Any) -> Pipeline:
        self._calls.append((name, args, kw))
        return self

    def get(self, key: Key, **kw: Any) -> Pipeline:
        return self._queue("get", key, **kw)

    def set(self, key: Key, value: Value, **kw: Any) -> Pipeline:
        return self._queue("set", key, value, **kw)

    def delete(self, key: Key, **kw: Any) -> Pipeline:
        return self._queue("delete", key, **kw)

    def incrby(self, key: Key, delta: int = 1, **kw: Any) -> Pipeline:
        return self._queue("incrby", key, delta, **kw)

    def mget(self, keys: Iterable[Key], **kw: Any) -> Pipeline:
        return self._queue("mget", list(keys), **kw)

    def mset(self, items: Mapping[Key, Value] | Iterable[tuple[Key, Value]], **kw: Any) -> Pipeline:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        return self._queue("mset", pairs, **kw)

    def command(self, *args: Value, **kw: Any) -> Pipeline:
        """Queue any Redis command (what :meth:`Client.execute` runs)."""
        return self._queue("execute", *args, **kw)

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued; results in order. With ``raise_on_error=False`` failed
        operations give their exception in the list instead of raising the first one."""
        calls, self._calls = self._calls, []
        aio = self._client.aio

        async def run() -> list[Any]:
            return await asyncio.gather(
                *(getattr(aio, name)(*args, **kw) for name, args, kw in calls),
                return_exceptions=True,
            )

        results = self._client._run(run())
        if raise_on_error:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._calls.clear()
