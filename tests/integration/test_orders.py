"""The orders actor on the real RabbitMQ and MongoDB: its saga steps, its refusals, its streams.

The other actors of the saga are played by the test itself (it sends payment.* and shipment.* as
payments and shipping would); inventory runs for real where stock matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from pymongo import AsyncMongoClient

from actors.orders.events import Placed, Recorded
from actors.orders.store import OrdersStore
from actors.runtime.errors import ConcurrentUpdate
from actors.runtime.outbox import applied_among, outbox_entries
from brokers.contracts.catalog import ProductCreated, ProductPriceChanged
from brokers.contracts.common import Line
from brokers.contracts.inventory import GetStock, StockReleased, StockReserved, StockView
from brokers.contracts.orders import (
    CancelOrder,
    ExpireOrder,
    GetOrder,
    ListOrders,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderPage,
    OrderPlaced,
    OrderShipped,
    OrderView,
    PlaceOrder,
)
from brokers.contracts.payments import PaymentCaptured, PaymentFailed
from brokers.contracts.shipping import ShipmentDelivered, ShipmentDispatched
from brokers.deadletters import ATTEMPTS, ERROR, REASON
from brokers.envelope import Envelope, Message
from brokers.factory import publish
from brokers.rpc import QueryFailed, Requester
from brokers.settings import Settings
from brokers.topology import dlq_name
from ops.orders_readmodel import rebuild_read_model
from tests.helpers import Tap, eventually, send
from tests.integration.support import Amqp, amqp, header, requester, stock

CUSTOMER = "customer-1"
DEFAULT_DEADLINE_QUEUE = "orders.delay.120000ms"


@dataclass
class Shop:
    """The test's side of the saga: what it sends to orders and how it looks at the outcome."""

    settings: Settings
    broker: RabbitBroker
    mongo: AsyncMongoClient
    asker: Requester
    tap: Tap
    rabbit: Amqp

    def db(self, actor: str):
        return self.mongo[self.settings.database_name(actor)]

    async def send(self, message: Message, order_id: str) -> Envelope:
        return await send(self.broker, message, correlation_id=order_id)

    async def knows(self, sku: str, cents: int = 1_000, currency: str = "EUR") -> None:
        """Announce a product as catalog would; wait until orders' replica has its price."""
        await send(
            self.broker,
            ProductCreated(
                product_id=f"p-{sku}",
                sku=sku,
                name=sku,
                category="test",
                price_cents=cents,
                currency=currency,
            ),
        )
        await self.replica_has(sku, cents)

    async def replica_has(self, sku: str, cents: int) -> None:
        await eventually(
            lambda: self.db("orders")["prices"].find_one({"_id": sku, "cents": cents}),
            what=f"orders to price {sku}",
        )

    async def place(self, order_id: str, *lines: tuple[str, int], digest: str = "digest-1") -> Envelope:
        command = PlaceOrder(
            order_id=order_id,
            customer_id=CUSTOMER,
            lines=[Line(sku=s, quantity=q) for s, q in lines],
            request_digest=digest,
        )
        return await self.send(command, order_id)

    async def order(self, order_id: str, status: str, timeout: float = 20.0) -> OrderView:
        return await eventually(
            lambda: self.asker.ask(GetOrder(order_id=order_id), OrderView),
            until=lambda view: view.status == status,
            timeout=timeout,
            what=f"order {order_id} {status}",
        )

    async def applied(self, actor: str, *message_ids: str) -> None:
        """Wait until the actor has handled these messages (its inbox has their ids)."""
        ids = list(message_ids)
        await eventually(
            lambda: applied_among(self.db(actor), ids),
            until=lambda applied: len(applied) == len(ids),
            what=f"{actor} to apply {len(ids)} message(s)",
        )

    async def stream(self, order_id: str) -> list[dict[str, Any]]:
        return (
            await self.db("orders")["order_events"].find({"order_id": order_id}).sort("version", 1).to_list()
        )

    def announced(self, type_: str, order_id: str) -> list[AbstractIncomingMessage]:
        """The announcements of this type about this order, one per message id: the outbox may
        publish a message twice (consumers absorb that by its id, and so does this count)."""
        distinct = {m.message_id: m for m in self.tap.of_type(type_) if m.correlation_id == order_id}
        return list(distinct.values())

    async def emitted(self, routing_key: str, order_id: str) -> int:
        """How many messages about this order orders committed to its outbox with this routing key
        (an event type, or the delay queue of a timer): exact as soon as the handler committed,
        unlike what reaches the broker a moment later (and maybe twice)."""
        where = {"routing_key": routing_key, "envelope.correlation_id": order_id}
        return len(await outbox_entries(self.db("orders"), **where))

    async def told(self, type_: str, order_id: str) -> list[AbstractIncomingMessage]:
        """Wait until this was announced about this order; what ``announced`` then says."""

        async def so_far() -> list[AbstractIncomingMessage]:
            return self.announced(type_, order_id)

        return await eventually(so_far, what=f"{type_} for {order_id}")

    async def captured(self, order_id: str, amount_cents: int) -> Envelope:
        capture = PaymentCaptured(
            payment_id=f"pay-{order_id}",
            order_id=order_id,
            customer_id=CUSTOMER,
            amount_cents=amount_cents,
            currency="EUR",
            provider_reference=f"ref-{order_id}",
        )
        return await self.send(capture, order_id)

    async def reserved(self, order_id: str, *lines: tuple[str, int]) -> Envelope:
        """stock.reserved as inventory would send it (for tests without inventory)."""
        return await self.send(
            StockReserved(order_id=order_id, lines=[Line(sku=s, quantity=q) for s, q in lines]), order_id
        )

    async def dead_letters(self, count: int) -> list[AbstractIncomingMessage]:
        return await self.rabbit.take(dlq_name("orders"), count)


@pytest.fixture
async def shop(settings, broker, mongo) -> AsyncIterator[Shop]:
    async with Tap(settings.rabbitmq_url) as tap, requester(settings) as asker, amqp(settings) as rabbit:
        yield Shop(settings, broker, mongo, asker, tap, rabbit)


def dispatched(order_id: str) -> ShipmentDispatched:
    return ShipmentDispatched(
        shipment_id=f"s-{order_id}", order_id=order_id, carrier="dhl", tracking_number="T-1"
    )


def statuses(view: OrderView) -> list[str]:
    return [step.status for step in view.history]


async def level(shop: Shop, sku: str, on_hand: int, reserved: int) -> StockView:
    return await eventually(
        lambda: shop.asker.ask(GetStock(sku=sku), StockView),
        until=lambda stock_level: (stock_level.on_hand, stock_level.reserved) == (on_hand, reserved),
        what=f"{sku} at {on_hand} on hand, {reserved} reserved",
    )


# --- placing -------------------------------------------------------------------------------------


async def test_placing_prices_lines_from_the_catalog_replica_and_sets_the_deadline(start_host, shop):
    await start_host("orders")
    await shop.knows("SKU-A", 250)
    await shop.knows("SKU-B", 1_000)
    await send(
        shop.broker,
        ProductPriceChanged(
            product_id="p-SKU-B", sku="SKU-B", old_price_cents=1_000, price_cents=1_200, currency="EUR"
        ),
    )
    await shop.replica_has("SKU-B", 1_200)
    # A price event from before that change, arriving late (out of a retry), does not undo it.
    stale = ProductPriceChanged(
        product_id="p-SKU-B", sku="SKU-B", old_price_cents=900, price_cents=1_000, currency="EUR"
    )
    late = Envelope.first(stale).model_copy(update={"occurred_at": datetime(2020, 1, 1, tzinfo=UTC)})
    await publish(shop.broker, stale, late)
    await shop.applied("orders", late.message_id)

    await shop.place("o-priced", ("SKU-A", 2), ("SKU-B", 1))
    [placed] = await shop.told(OrderPlaced.TYPE, "o-priced")
    view = await shop.order("o-priced", "placed")

    lines = [
        OrderLine(sku="SKU-A", quantity=2, unit_price_cents=250),
        OrderLine(sku="SKU-B", quantity=1, unit_price_cents=1_200),
    ]
    assert OrderPlaced.parse(placed.body) == OrderPlaced(
        order_id="o-priced", customer_id=CUSTOMER, lines=lines, total_cents=1_700, currency="EUR"
    )
    assert (view.lines, view.total_cents, view.version, statuses(view)) == (lines, 1_700, 1, ["placed"])
    [event] = await shop.stream("o-priced")
    assert (event["version"], event["type"], event["data"]["total_cents"]) == (1, "placed", 1_700)
    # The deadline waits in its delay queue.
    await eventually(lambda: shop.rabbit.depth(DEFAULT_DEADLINE_QUEUE), what="the deadline timer")


async def test_the_same_place_order_twice_is_one_order(start_host, shop):
    await start_host("orders")
    await shop.knows("SKU-TWICE")
    first = await shop.place("o-twice", ("SKU-TWICE", 1))
    again = await shop.place("o-twice", ("SKU-TWICE", 1))  # a client retry: same body, new message id
    await shop.applied("orders", first.message_id, again.message_id)

    assert len(await shop.stream("o-twice")) == 1
    assert await shop.emitted(OrderPlaced.TYPE, "o-twice") == 1
    assert await shop.emitted(DEFAULT_DEADLINE_QUEUE, "o-twice") == 1


async def test_refused_orders_are_dead_lettered_with_their_reason_and_a_reused_id_changes_nothing(
    start_host, shop
):
    await start_host("orders")
    await shop.knows("SKU-EUR", 100, "EUR")
    await shop.knows("SKU-USD", 100, "USD")
    await shop.place("o-used", ("SKU-EUR", 1))
    await shop.order("o-used", "placed")

    await shop.place("o-unknown", ("SKU-EUR", 1), ("SKU-NOPE", 1))
    await shop.place("o-mixed", ("SKU-EUR", 1), ("SKU-USD", 1))
    reused = await shop.place("o-used", ("SKU-EUR", 5), digest="another-request")
    await shop.applied("orders", reused.message_id)  # the first request under the id stands
    dead = await shop.dead_letters(2)

    errors = {m.correlation_id: header(m, ERROR) for m in dead}
    assert {header(m, REASON) for m in dead} == {"rule-violation"}
    assert "unknown SKU(s) SKU-NOPE" in errors["o-unknown"]
    assert "priced in EUR, USD" in errors["o-mixed"]
    assert len(await shop.stream("o-used")) == 1
    assert await shop.stream("o-unknown") == await shop.stream("o-mixed") == []
    assert (await shop.order("o-used", "placed")).total_cents == 100
    with pytest.raises(QueryFailed) as refused:
        await shop.asker.ask(GetOrder(order_id="o-unknown"), OrderView)
    assert refused.value.problem.status == 404


async def test_an_event_for_a_corrupt_stream_is_dead_lettered_at_once_not_retried(start_host, shop):
    """A stream no decisions can produce is a bug or a hand edit: retrying reads it again."""
    await start_host("orders")
    await shop.knows("SKU-EUR", 100, "EUR")
    await shop.place("o-corrupt", ("SKU-EUR", 1))
    await shop.order("o-corrupt", "placed")
    edited = await shop.db("orders")["order_events"].update_one(
        {"order_id": "o-corrupt", "version": 1},
        {"$set": {"version": 2}},  # a hand edit: no version 1
    )
    assert edited.modified_count == 1

    reserved = await shop.reserved("o-corrupt", ("SKU-EUR", 1))
    [dead] = await shop.dead_letters(1)

    assert dead.message_id == reserved.message_id
    assert (header(dead, REASON), header(dead, ATTEMPTS)) == ("corrupt-data", 1)
    assert "version 2 cannot follow nothing" in header(dead, ERROR)


# --- the saga, with inventory --------------------------------------------------------------------


async def test_an_order_goes_placed_reserved_confirmed_shipped_delivered(start_host, shop):
    await start_host("orders", "inventory")
    await stock(shop.broker, shop.asker, "SKU-HAPPY", 5)
    await shop.replica_has("SKU-HAPPY", 1_000)

    await shop.place("o-happy", ("SKU-HAPPY", 2))
    await shop.order("o-happy", "reserved")
    await shop.captured("o-happy", 2_000)
    await shop.order("o-happy", "confirmed")
    await shop.send(dispatched("o-happy"), "o-happy")
    await shop.order("o-happy", "shipped")
    await shop.send(ShipmentDelivered(shipment_id="s-o-happy", order_id="o-happy"), "o-happy")
    view = await shop.order("o-happy", "delivered")

    assert statuses(view) == ["placed", "reserved", "confirmed", "shipped", "delivered"]
    assert view.version == 5 and view.cancel_reason is None
    for type_ in (OrderPlaced.TYPE, OrderConfirmed.TYPE, OrderShipped.TYPE, OrderDelivered.TYPE):
        assert await shop.emitted(type_, "o-happy") == 1
    [confirmed] = await shop.told(OrderConfirmed.TYPE, "o-happy")
    assert OrderConfirmed.parse(confirmed.body).total_cents == 2_000
    [shipped] = await shop.told(OrderShipped.TYPE, "o-happy")
    assert OrderShipped.parse(shipped.body).tracking_number == "T-1"
    committed = await eventually(
        lambda: shop.asker.ask(GetStock(sku="SKU-HAPPY"), StockView), until=lambda s: s.shipped == 2
    )
    assert (committed.on_hand, committed.reserved, committed.received) == (3, 0, 5)


async def test_out_of_stock_cancels_the_order_and_inventory_holds_nothing(start_host, shop):
    await start_host("orders", "inventory")
    await stock(shop.broker, shop.asker, "SKU-SCARCE", 1)
    await shop.replica_has("SKU-SCARCE", 1_000)

    await shop.place("o-short", ("SKU-SCARCE", 2))
    view = await shop.order("o-short", "cancelled")
    [cancelled] = await shop.told(OrderCancelled.TYPE, "o-short")
    # Inventory has handled the cancel too: it had nothing to release.
    await shop.applied("inventory", cancelled.message_id)

    assert (view.cancel_reason, statuses(view)) == ("out_of_stock", ["placed", "cancelled"])
    assert OrderCancelled.parse(cancelled.body).customer_id == CUSTOMER
    assert shop.tap.of_type(StockReleased.TYPE) == []
    assert (await shop.asker.ask(GetStock(sku="SKU-SCARCE"), StockView)).model_dump() == {
        "sku": "SKU-SCARCE",
        "on_hand": 1,
        "reserved": 0,
        "shipped": 0,
        "received": 1,
    }


async def test_a_declined_payment_cancels_the_order_and_releases_its_stock(start_host, shop):
    await start_host("orders", "inventory")
    await stock(shop.broker, shop.asker, "SKU-DECLINED", 3)
    await shop.replica_has("SKU-DECLINED", 1_000)
    await shop.place("o-declined", ("SKU-DECLINED", 2))
    await shop.order("o-declined", "reserved")
    await level(shop, "SKU-DECLINED", on_hand=1, reserved=2)

    await shop.send(
        PaymentFailed(order_id="o-declined", customer_id=CUSTOMER, reason="declined"), "o-declined"
    )
    view = await shop.order("o-declined", "cancelled")

    assert view.cancel_reason == "payment_declined"
    await shop.tap.wait_for(StockReleased.TYPE)
    await level(shop, "SKU-DECLINED", on_hand=3, reserved=0)


async def test_an_order_not_confirmed_by_its_deadline_is_cancelled_and_its_stock_released(start_host, shop):
    await start_host("orders", "inventory", emporium_order_deadline_ms=500)
    await stock(shop.broker, shop.asker, "SKU-LATE", 2)
    await shop.replica_has("SKU-LATE", 1_000)

    await shop.place("o-late", ("SKU-LATE", 1))
    view = await shop.order("o-late", "cancelled")

    assert (view.cancel_reason, statuses(view)) == ("timeout", ["placed", "reserved", "cancelled"])
    assert (view.updated_at - view.placed_at).total_seconds() >= 0.5
    await shop.tap.wait_for(StockReleased.TYPE)
    await level(shop, "SKU-LATE", on_hand=2, reserved=0)


async def test_the_customer_cancels_before_the_capture_and_a_late_capture_does_not_revive_it(
    start_host, shop
):
    await start_host("orders", "inventory")
    await stock(shop.broker, shop.asker, "SKU-CHANGE", 2)
    await shop.replica_has("SKU-CHANGE", 1_000)
    await shop.place("o-mind", ("SKU-CHANGE", 1))
    await shop.order("o-mind", "reserved")

    await shop.send(CancelOrder(order_id="o-mind", customer_id="someone-else"), "o-mind")
    [refused] = await shop.dead_letters(1)
    await shop.send(CancelOrder(order_id="o-mind", customer_id=CUSTOMER), "o-mind")
    cancelled = await shop.order("o-mind", "cancelled")
    late = await shop.captured("o-mind", 1_000)
    await shop.applied("orders", late.message_id)

    assert "not an order of customer someone-else" in header(refused, ERROR)
    assert cancelled.cancel_reason == "customer"
    assert (await shop.asker.ask(GetOrder(order_id="o-mind"), OrderView)) == cancelled
    assert await shop.emitted(OrderConfirmed.TYPE, "o-mind") == 0
    await shop.tap.wait_for(StockReleased.TYPE)
    await level(shop, "SKU-CHANGE", on_hand=2, reserved=0)


# --- the saga, orders alone ----------------------------------------------------------------------


async def test_cancelling_after_dispatch_changes_nothing_and_parks_no_dead_letter(start_host, shop):
    await start_host("orders")
    await shop.knows("SKU-GONE")
    await shop.place("o-gone", ("SKU-GONE", 1))
    await shop.reserved("o-gone", ("SKU-GONE", 1))
    await shop.captured("o-gone", 1_000)
    await shop.order("o-gone", "confirmed")
    await shop.send(dispatched("o-gone"), "o-gone")
    shipped = await shop.order("o-gone", "shipped")

    # A customer's cancel that lost the race with the dispatch: too late, and not their fault.
    cancel = await shop.send(CancelOrder(order_id="o-gone", customer_id=CUSTOMER), "o-gone")
    await shop.applied("orders", cancel.message_id)

    assert await shop.asker.ask(GetOrder(order_id="o-gone"), OrderView) == shipped
    assert await shop.emitted(OrderCancelled.TYPE, "o-gone") == 0
    assert await shop.rabbit.depth(dlq_name("orders")) == 0


async def test_a_capture_and_a_competing_cancel_on_two_hosts_never_fork_a_stream(start_host, shop):
    """payment.captured races the deadline (ExpireOrder) or the customer (CancelOrder), on two
    competing hosts: each stream stays one line of versions 1..n, and nothing follows a cancel."""
    await start_host("orders")
    await start_host("orders")
    assert await shop.rabbit.consumers("orders") == 2
    await shop.knows("SKU-RACE")
    order_ids = [f"o-race-{n}" for n in range(12)]
    await asyncio.gather(*(shop.place(order_id, ("SKU-RACE", 1)) for order_id in order_ids))
    await asyncio.gather(*(shop.order(order_id, "placed") for order_id in order_ids))
    await asyncio.gather(*(shop.reserved(order_id, ("SKU-RACE", 1)) for order_id in order_ids))
    await asyncio.gather(*(shop.order(order_id, "reserved") for order_id in order_ids))

    def rival(n: int, order_id: str) -> Message:
        return (
            ExpireOrder(order_id=order_id) if n % 2 else CancelOrder(order_id=order_id, customer_id=CUSTOMER)
        )

    sent = await asyncio.gather(
        *(
            message
            for n, order_id in enumerate(order_ids)
            for message in (shop.captured(order_id, 1_000), shop.send(rival(n, order_id), order_id))
        )
    )
    await shop.applied("orders", *(envelope.message_id for envelope in sent))

    for n, order_id in enumerate(order_ids):
        stream = await shop.stream(order_id)
        types = [event["type"] for event in stream]
        view = await shop.asker.ask(GetOrder(order_id=order_id), OrderView)
        assert [event["version"] for event in stream] == list(range(1, len(stream) + 1)), order_id
        assert view.version == len(stream) and statuses(view) == types
        if n % 2:  # the deadline: it either came in time or not, never both
            assert types in (["placed", "reserved", "confirmed"], ["placed", "reserved", "cancelled"]), types
        else:  # a confirmed order's cancel asks shipping; a cancelled one is never confirmed
            assert types in (
                ["placed", "reserved", "confirmed", "cancelling"],
                ["placed", "reserved", "cancelled"],
            )
        assert await shop.emitted(OrderConfirmed.TYPE, order_id) == types.count("confirmed")
        assert await shop.emitted(OrderCancelled.TYPE, order_id) == types.count("cancelled")
    assert await shop.rabbit.depth(dlq_name("orders")) == 0


async def test_an_append_at_a_taken_version_is_a_concurrent_update(mongo, settings):
    db = mongo[settings.database_name("orders")]
    await OrdersStore.prepare(db)
    store = OrdersStore(db)
    line = OrderLine(sku="SKU-X", quantity=1, unit_price_cents=5)
    event = Placed(customer_id=CUSTOMER, lines=(line,), total_cents=5, currency="EUR", request_digest="d")
    placed = Recorded("o-taken", 1, datetime.now(UTC), event)
    await store.append([placed], message_id="first")

    with pytest.raises(ConcurrentUpdate, match="o-taken already has a version 1"):
        await store.append([placed], message_id="second")
    assert [doc["message_id"] async for doc in db["order_events"].find({"order_id": "o-taken"})] == ["first"]


# --- queries and the read model ------------------------------------------------------------------


async def test_the_read_model_rebuilt_from_the_streams_equals_the_live_one(start_host, shop, settings):
    await start_host("orders")
    await shop.knows("SKU-RM")
    final = {
        "o-rm-placed": "placed",
        "o-rm-reserved": "reserved",
        "o-rm-confirmed": "confirmed",
        "o-rm-cancelled": "cancelled",
    }
    for order_id in final:  # one after the other, so that newest first is a known order
        await shop.place(order_id, ("SKU-RM", 1))
        await shop.order(order_id, "placed")
    for order_id, status in final.items():
        if status != "placed":
            await shop.reserved(order_id, ("SKU-RM", 1))
        if status == "confirmed":
            await shop.captured(order_id, 1_000)
        if status == "cancelled":
            await shop.send(CancelOrder(order_id=order_id, customer_id=CUSTOMER), order_id)
    live = {order_id: await shop.order(order_id, status) for order_id, status in final.items()}
    live_page = await shop.asker.ask(ListOrders(customer_id=CUSTOMER, limit=3), OrderPage)

    views = shop.db("orders")["orders"]
    await views.delete_one({"_id": "o-rm-confirmed"})
    await views.update_one({"_id": "o-rm-cancelled"}, {"$set": {"status": "delivered", "version": 99}})
    await views.insert_one(
        {**live["o-rm-placed"].model_dump(), "_id": "o-rm-orphan", "order_id": "o-rm-orphan"}
    )
    rebuilt_count = await rebuild_read_model(settings)

    rebuilt = {order_id: await shop.asker.ask(GetOrder(order_id=order_id), OrderView) for order_id in final}
    assert rebuilt_count == 4
    assert rebuilt == live
    assert await shop.asker.ask(ListOrders(customer_id=CUSTOMER, limit=3), OrderPage) == live_page
    assert [view.order_id for view in live_page.items] == [
        "o-rm-cancelled",
        "o-rm-confirmed",
        "o-rm-reserved",
    ]
    assert (live_page.total, live_page.offset, live_page.limit) == (4, 0, 3)
    with pytest.raises(QueryFailed) as gone:
        await shop.asker.ask(GetOrder(order_id="o-rm-orphan"), OrderView)
    assert gone.value.problem.status == 404
