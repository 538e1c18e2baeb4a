"""Per-key serialisation inside one actor process.

With prefetch > 1 a process handles many messages at once. Messages about the same entity (an
order, a SKU) would then run side by side, read the same documents and fight over them: the losers
abort and retry, and on a hot key they back off for seconds. Here they queue instead, one at a time
per key, while messages about other keys go on in parallel. Correctness across processes (replicas)
still comes from the database: every decision about an entity writes that entity's document.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        # key -> (lock, holders and waiters); a key is forgotten when nobody holds or awaits it.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def holding(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key's lock. Keys are taken in one global (sorted) order, all before the work
        starts, so two messages that share several keys cannot wait for each other in a circle."""
        async with AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                await stack.enter_async_context(self._one(key))
            yield

    @asynccontextmanager
    async def _one(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
