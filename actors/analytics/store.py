"""Analytics' data: the facts of each order, and the counters every figure is read from.

The counters are spread over ``SHARDS`` documents (``{"_id": 17, "status": {"placed": 3, ...},
"units": {"LAMP-1": 4, ...}, ..., "as_of": <latest event reflected>}``), each order always counted in
the same one, and changed with ``$inc`` in the same transaction as the order's facts. One document
for all would make every two concurrent handlers conflict (measured: ~15 transaction attempts per
event with 32 in flight); spread out, orders rarely meet, and GetStats sums a few dozen documents.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo import UpdateOne

from actors.analytics import domain
from actors.analytics.domain import Line, OrderFacts
from actors.runtime.errors import ConcurrentUpdate
from actors.runtime.store import Store
from brokers.contracts.analytics import Stats

SHARDS = 64


def _shard(order_id: str) -> int:
    return zlib.crc32(order_id.encode()) % SHARDS


def _facts(doc: dict[str, Any]) -> OrderFacts:
    doc = dict(doc)
    lines = doc.pop("lines")
    return OrderFacts(
        order_id=doc.pop("_id"), lines=None if lines is None else tuple(Line(**line) for line in lines), **doc
    )


class AnalyticsStore(Store):
    @property
    def _orders(self):
        return self.db["orders"]

    @property
    def _counters(self):
        return self.db["counters"]

    @classmethod
    async def prepare(cls, db) -> None:
        # Made up front, so that concurrent first events only ever update them.
        empty = {"$setOnInsert": {"as_of": None}}
        await db["counters"].bulk_write(
            [UpdateOne({"_id": n}, empty, upsert=True) for n in range(SHARDS)], ordered=False
        )

    async def facts(self, order_id: str) -> OrderFacts:
        doc = await self._orders.find_one({"_id": order_id}, session=self.session)
        return OrderFacts(order_id) if doc is None else _facts(doc)

    async def record(self, before: OrderFacts, after: OrderFacts, at: datetime) -> None:
        """Save the order's new facts and add what they change to its counters."""
        await self._save(before, after)
        difference = domain.difference(before, after)
        changes = {f"{kind}.{key}": change for (kind, key), change in difference.items()}
        update: dict[str, Any] = {"$max": {"as_of": at}}
        if changes:
            update["$inc"] = changes
        await self._counters.update_one({"_id": _shard(after.order_id)}, update, session=self.session)

    async def _save(self, before: OrderFacts, after: OrderFacts) -> None:
        """Insert the facts of a new order, or update them only if still at the version they were read."""
        doc = {**asdict(after), "version": before.version + 1}
        doc.pop("order_id")
        if before.version == 0:
            await self._orders.insert_one({"_id": after.order_id, **doc}, session=self.session)
            return
        result = await self._orders.update_one(
            {"_id": after.order_id, "version": before.version}, {"$set": doc}, session=self.session
        )
        if result.matched_count != 1:
            raise ConcurrentUpdate(f"analytics of order {after.order_id} changed while it was being updated")

    async def stats(self, *, top: int) -> Stats:
        counters: dict[str, Counter[str]] = defaultdict(Counter)
        latest: list[datetime] = []
        async for shard in self._counters.find({}, session=self.session):
            shard.pop("_id")
            if (as_of := shard.pop("as_of")) is not None:
                latest.append(as_of)
            for kind, counts in shard.items():
                counters[kind].update(counts)
        return domain.stats(counters, as_of=max(latest, default=None), top=top)
