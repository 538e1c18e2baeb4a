"""The orders actor's data: one event stream per order, the read model folded from them, and the
catalog replica (sku -> price) that orders are priced from.

- ``order_events``: {order_id, version, type, data, at, message_id}; unique on (order_id, version),
  which is what makes appending optimistic: two handlers that read version n both try to write
  n + 1, and only one can.
- ``orders``: one OrderView per order (``_id`` = order id), replaced in the transaction of every
  append, so it is never behind its stream; ``rebuild_read_model`` recomputes it from the streams.
- ``prices``: {_id: sku, cents, currency, as_of}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from actors.orders import domain
from actors.orders.domain import Order, Price
from actors.orders.events import Recorded, event_of
from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Store
from brokers.contracts.orders import OrderView

EVENTS, VIEWS, PRICES = "order_events", "orders", "prices"
_NEWEST_FIRST = [("placed_at", DESCENDING), ("_id", DESCENDING)]


def _recorded(doc: dict[str, Any]) -> Recorded:
    return Recorded(doc["order_id"], doc["version"], doc["at"], event_of(doc["type"], doc["data"]))


def _view(doc: dict[str, Any]) -> OrderView:
    return OrderView.model_validate({k: v for k, v in doc.items() if k != "_id"})


class OrdersStore(Store):
    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        await db[EVENTS].create_index([("order_id", ASCENDING), ("version", ASCENDING)], unique=True)
        await db[VIEWS].create_index([("customer_id", ASCENDING), *_NEWEST_FIRST])

    # --- streams ---------------------------------------------------------------------------------

    async def order(self, order_id: str) -> Order | None:
        """The order folded from its stream, None if it has none."""
        docs = self.db[EVENTS].find({"order_id": order_id}, session=self.session).sort("version", ASCENDING)
        return domain.fold([_recorded(doc) async for doc in docs])

    async def append(self, recorded: Sequence[Recorded], *, message_id: str) -> None:
        """Add events to their stream; ConcurrentUpdate if another handler took a version first."""
        for entry in recorded:
            try:
                await self.db[EVENTS].insert_one(
                    {
                        "order_id": entry.order_id,
                        "version": entry.version,
                        "type": entry.event.STATUS,
                        "data": entry.event.model_dump(mode="json"),
                        "at": entry.at,
                        "message_id": message_id,
                    },
                    session=self.session,
                )
            except DuplicateKeyError as exc:
                taken = f"order {entry.order_id} already has a version {entry.version}"
                raise ConcurrentUpdate(f"{taken}: another handler appended first") from exc

    async def order_ids(self) -> AsyncIterator[str]:
        """Every order that has a stream."""
        async for doc in await self.db[EVENTS].aggregate(
            [{"$group": {"_id": "$order_id"}}], session=self.session
        ):
            yield doc["_id"]

    # --- read model ------------------------------------------------------------------------------

    async def save_view(self, view: OrderView) -> None:
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
        docs = self.db[PRICES].find({"_id": {"$in": list(skus)}}, session=self.session)
        return {
            doc["_id"]: Price(doc["_id"], doc["cents"], doc["currency"], doc["as_of"]) async for doc in docs
        }

    async def save_price(self, price: Price) -> None:
        await self.db[PRICES].replace_one(
            {"_id": price.sku},
            {"cents": price.cents, "currency": price.currency, "as_of": price.as_of},
            upsert=True,
            session=self.session,
        )
