"""Rebuild the orders read model from the order streams.

The end state is that of dropping the read model and folding every stream again, reached without
a moment in which orders are missing: each order's view is recomputed from its stream in a
transaction of its own (a handler appending to that order at the same time conflicts with it and
one of the two runs again on the other's result), then the views that had no stream are deleted.
Only views that existed before the streams were listed can be such orphans (a view is written in
the transaction that appends to its stream), so an order placed meanwhile is never taken for one.
So it is safe while the orders actor is running.
"""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.orders import orders
from actors.orders.store import OrdersStore
from brokers.settings import Settings


async def rebuild_read_model(settings: Settings) -> int:
    """Recompute every order's view from its stream; returns how many orders were rebuilt."""
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    try:
        db = client[settings.database_name(orders.name)]
        await OrdersStore.prepare(db)
        store = OrdersStore(db)
        views_before = {order_id async for order_id in store.view_ids()}
        order_ids = {order_id async for order_id in store.order_ids()}
        for order_id in order_ids:
            await _refresh(client, db, order_id)
        await store.delete_views(views_before - order_ids)
        return len(order_ids)
    finally:
        await client.close()


async def _refresh(client: AsyncMongoClient, db: AsyncDatabase, order_id: str) -> None:
    async def refresh(session: AsyncClientSession) -> None:
        await OrdersStore(db, session).refresh_view(order_id)

    async with client.start_session() as session:
        await session.with_transaction(refresh)
