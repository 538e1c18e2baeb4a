"""The orders actor's data: one event stream per order, the read model folded from them, and the
catalog replica (sku -> price) that orders are priced from.

- ``order_events``: {order_id, version, type, data, at, message_id}; unique on (order_id, version),
  which is what makes appending optimistic: two handlers that read version n both try to write
  n + 1, and only one can.
- ``orders``: one OrderView per order (``_id`` = order id), replaced in the transaction of every
  append, so it is never behind its stream; ``rebuild_read_model`` recomputes it from the streams.
- ``prices``: {_id: sku, cents, currency, as_of}.

In a batch (``preload``), the streams of every order the messages name and the prices of the SKUs
they order are read in two round trips, and new events and views are written at the end in two
(``flush``); the handlers after one see what it appended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from actors.orders import domain
from actors.orders.domain import Order
from actors.orders.events import Recorded, event_of
from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Store, ids_named
from brokers.contracts.orders import OrderView, PlaceOrder
from brokers.pricing import Price

EVENTS, VIEWS, PRICES = "order_events", "orders", "prices"
_NEWEST_FIRST = [("placed_at", DESCENDING), ("_id", DESCENDING)]


def _recorded(doc: dict[str, Any]) -> Recorded:
    return Recorded(doc["order_id"], doc["version"], doc["at"], event_of(doc["type"], doc["data"]))


def _view(doc: dict[str, Any]) -> OrderView:
    return OrderView.model_validate({k: v for k, v in doc.items() if k != "_id"})


def _event_doc(entry: Recorded, message_id: str) -> dict[str, Any]:
    return {
        "order_id": entry.order_id,
        "version": entry.version,
        "type": entry.event.STATUS,
        "data": entry.event.model_dump(mode="json"),
        "at": entry.at,
        "message_id": message_id,
    }


def _taken(order_id: str, version: int) -> ConcurrentUpdate:
    return ConcurrentUpdate(
        f"order {order_id} already has a version {version}: another handler appended first"
    )


class OrdersStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._streams: dict[str, list[Recorded]] = {}
        self._prices: dict[str, Price | None] = {}
        self._new_events: list[dict[str, Any]] = []
        self._new_views: dict[str, OrderView] = {}

    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        await db[EVENTS].create_index([("order_id", ASCENDING), ("version", ASCENDING)], unique=True)
        await db[VIEWS].create_index([("customer_id", ASCENDING), *_NEWEST_FIRST])

    # --- streams ---------------------------------------------------------------------------------

    async def preload(self, messages: Sequence[object]) -> None:
        if order_ids := ids_named(messages):
            self._streams.update(await self._read_streams(order_ids))
        skus = {line.sku for m in messages if isinstance(m, PlaceOrder) for line in m.lines}
        if skus:
            await self.prices(skus)

    async def _read_streams(self, order_ids: Sequence[str]) -> dict[str, list[Recorded]]:
        streams: dict[str, list[Recorded]] = {order_id: [] for order_id in order_ids}
        docs = self.db[EVENTS].find({"order_id": {"$in": list(order_ids)}}, session=self.session)
        async for doc in docs.sort([("order_id", ASCENDING), ("version", ASCENDING)]):
            streams[doc["order_id"]].append(_recorded(doc))
        return streams

    async def flush(self) -> None:
        events, views = self._new_events, self._new_views
        self._new_events, self._new_views = [], {}
        if events:
            try:
                await self.db[EVENTS].insert_many(events, session=self.session)
            except BulkWriteError as exc:
                doc = events[exc.details["writeErrors"][0]["index"]]
                raise _taken(doc["order_id"], doc["version"]) from exc
        if views:
            await self.db[VIEWS].bulk_write(
                [ReplaceOne({"_id": i}, {"_id": i, **v.model_dump()}, upsert=True) for i, v in views.items()],
                session=self.session,
            )

    async def order(self, order_id: str) -> Order | None:
        """The order folded from its stream, None if it has none."""
        if order_id in self._streams:
            return domain.fold(self._streams[order_id])
        streams = await self._read_streams([order_id])
        if self.batched:  # kept for the handlers after, and for append
            self._streams.update(streams)
        return domain.fold(streams[order_id])

    async def append(self, recorded: Sequence[Recorded], *, message_id: str) -> None:
        """Add events to their stream; ConcurrentUpdate if another handler took a version first."""
        if self.batched and recorded:
            order_id = recorded[0].order_id
            if order_id not in self._streams:
                await self.order(order_id)
            stream = self._streams[order_id]
            for entry in recorded:
                if stream and entry.version <= stream[-1].version:
                    raise _taken(entry.order_id, entry.version)
                stream.append(entry)
                self._new_events.append(_event_doc(entry, message_id))
            return
        for entry in recorded:
            try:
                await self.db[EVENTS].insert_one(_event_doc(entry, message_id), session=self.session)
            except DuplicateKeyError as exc:
                raise _taken(entry.order_id, entry.version) from exc

    async def order_ids(self) -> AsyncIterator[str]:
        """Every order that has a stream."""
        async for doc in await self.db[EVENTS].aggregate(
            [{"$group": {"_id": "$order_id"}}], session=self.session
        ):
            yield doc["_id"]

    # --- read model ------------------------------------------------------------------------------

    async def save_view(self, view: OrderView) -> None:
        if self.batched:
            self._new_views[view.order_id] = view
            return
        await self.db[VIEWS].replace_one(
            {"_id": view.order_id},
            {"_id": view.order_id, **view.model_dump()},
            upsert=True,
            session=self.session,
        )

    async def refresh_view(self, order_id: str) -> None:
        """Recompute one order's view from its stream."""
        order = await self.order(order_id)
        if order is not None:
            await self.save_view(order.view())

    async def view_ids(self) -> AsyncIterator[str]:
        async for doc in self.db[VIEWS].find({}, {"_id": 1}, session=self.session):
            yield doc["_id"]

    async def delete_views(self, order_ids: Iterable[str]) -> int:
        result = await self.db[VIEWS].delete_many({"_id": {"$in": list(order_ids)}}, session=self.session)
        return result.deleted_count

    async def view(self, order_id: str) -> OrderView:
        doc = await self.db[VIEWS].find_one({"_id": order_id}, session=self.session)
        if doc is None:
            raise NotFound(f"order {order_id} does not exist")
        return _view(doc)

    async def views_of(
        self, customer_id: str | None, *, offset: int, limit: int
    ) -> tuple[list[OrderView], int]:
        """A page of a customer's orders (everyone's when None), newest first, and how many in all."""
        mine = {} if customer_id is None else {"customer_id": customer_id}
        docs = self.db[VIEWS].find(mine, session=self.session).sort(_NEWEST_FIRST).skip(offset).limit(limit)
        return [_view(doc) async for doc in docs], await self.db[VIEWS].count_documents(
            mine, session=self.session
        )

    # --- catalog replica -------------------------------------------------------------------------

    async def prices(self, skus: Iterable[str]) -> dict[str, Price]:
        wanted = set(skus)
        known: dict[str, Price | None] = {sku: self._prices[sku] for sku in wanted & self._prices.keys()}
        if missing := sorted(wanted - known.keys()):
            known.update(dict.fromkeys(missing))
            async for doc in self.db[PRICES].find({"_id": {"$in": missing}}, session=self.session):
                known[doc["_id"]] = Price(doc["_id"], doc["cents"], doc["currency"], doc["as_of"])
            if self.batched:
                self._prices.update(known)
        return {sku: price for sku, price in known.items() if price is not None}

    async def save_price(self, price: Price) -> None:
        if self.batched:
            self._prices[price.sku] = price
        await self.db[PRICES].replace_one(
            {"_id": price.sku},
            {"cents": price.cents, "currency": price.currency, "as_of": price.as_of},
            upsert=True,
            session=self.session,
        )
