"""Analytics' data: the facts of each order, and the counters every figure is read from.

The counters are spread over ``SHARDS`` documents (``{"_id": 17, "status": {"placed": 3, ...},
"units": {"LAMP-1": 4, ...}, ..., "as_of": <latest event reflected>}``), changed with ``$inc`` in the
same transaction as the order's facts; GetStats sums them all, so any change may go to any shard.
Each store (a batch's, or one message's) adds all it counts to one shard picked at random: one
document written per batch, and two replicas' batches meet on one only once in ``SHARDS``. One
document for all would make every two concurrent transactions conflict (measured: ~15 transaction
attempts per event with 32 in flight).

In a batch (``preload``), the facts of every order its events name are read in one round trip, and
at the end the new facts are written in one and the counters changed in one (``flush``).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.analytics import domain
from actors.analytics.domain import Line, OrderFacts
from actors.runtime.errors import ConcurrentUpdate
from actors.runtime.store import Held, Store, Versioned, ids_named, write_versions
from brokers.contracts.analytics import Stats

ORDERS, COUNTERS = "orders", "counters"

SHARDS = 64


def _facts(doc: dict[str, Any]) -> OrderFacts:
    doc = dict(doc)
    lines = doc.pop("lines")
    return OrderFacts(
        order_id=doc.pop("_id"), lines=None if lines is None else tuple(Line(**line) for line in lines), **doc
    )


def _stored(facts: OrderFacts) -> dict[str, Any]:
    doc = asdict(facts)
    doc.pop("order_id")
    return doc


class AnalyticsStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._facts: Held[OrderFacts] = Held()
        # What the batch counts, all of it added to one shard at flush, and its latest event.
        self._shard = random.randrange(SHARDS)
        self._counts: Counter[str] = Counter()
        self._as_of: datetime | None = None

    @classmethod
    async def prepare(cls, db) -> None:
        # Made up front, so that concurrent first events only ever update them.
        empty = {"$setOnInsert": {"as_of": None}}
        await db[COUNTERS].bulk_write(
            [UpdateOne({"_id": n}, empty, upsert=True) for n in range(SHARDS)], ordered=False
        )

    async def preload(self, messages: Sequence[object]) -> None:
        if order_ids := ids_named(messages):
            await self._read_facts(order_ids)

    async def _read_facts(self, order_ids: Sequence[str]) -> dict[str, OrderFacts]:
        read = {order_id: OrderFacts(order_id) for order_id in order_ids} | await self.read_ids(
            ORDERS, order_ids, _facts
        )
        if self.batched:
            self._facts.loaded(read)
        return read

    async def flush(self) -> None:
        if changed := self._facts.changed():
            await self._write(changed)
            self._facts.written()
        if self._as_of is not None:
            update = self._counter_update(self._counts, self._as_of)
            await self.db[COUNTERS].update_one({"_id": self._shard}, update, session=self.session)
            self._counts, self._as_of = Counter(), None

    async def facts(self, order_id: str) -> OrderFacts:
        if order_id in self._facts:
            return self._facts[order_id]
        return (await self._read_facts([order_id]))[order_id]

    async def record(self, before: OrderFacts, after: OrderFacts, at: datetime) -> None:
        """Save the order's new facts and add what they change to its counters."""
        difference = domain.difference(before, after)
        changes = {f"{kind}.{key}": change for (kind, key), change in difference.items()}
        if self.batched:
            if after.order_id not in self._facts:
                await self._read_facts([after.order_id])
            if self._facts[after.order_id] != before:
                raise ConcurrentUpdate(f"analytics of order {after.order_id} changed while being decided on")
            self._facts[after.order_id] = replace(after, version=before.version + 1)
            self._counts.update(changes)
            self._as_of = at if self._as_of is None else max(self._as_of, at)
            return
        await self._write([(before, replace(after, version=before.version + 1))])
        await self.db[COUNTERS].update_one(
            {"_id": self._shard}, self._counter_update(changes, at), session=self.session
        )

    @staticmethod
    def _counter_update(changes: Mapping[str, int], at: datetime) -> dict[str, Any]:
        update: dict[str, Any] = {"$max": {"as_of": at}}
        if changes := {key: change for key, change in changes.items() if change}:
            update["$inc"] = changes
        return update

    async def _write(self, changed: list[tuple[OrderFacts, OrderFacts]]) -> None:
        """Insert the facts of new orders, update the others only if still at the version they were read."""
        changes = [Versioned(now.order_id, was.version, _stored(now)) for was, now in changed]
        await write_versions(self.db[ORDERS], changes, session=self.session, what="analytics")

    async def stats(self, *, top: int) -> Stats:
        counters: dict[str, Counter[str]] = defaultdict(Counter)
        latest: list[datetime] = []
        async for shard in self.db[COUNTERS].find({}, session=self.session):
            shard.pop("_id")
            if (as_of := shard.pop("as_of")) is not None:
                latest.append(as_of)
            for kind, counts in shard.items():
                counters[kind].update(counts)
        return domain.stats(counters, as_of=max(latest, default=None), top=top)
