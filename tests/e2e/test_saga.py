"""The order saga end to end: through the edge, every actor running, the provider simulated over HTTP.

Each test opens its own shop (its vhost, databases, actors, edge and payment-provider simulator) and
ends by running the invariant checker over what the actors answer.
"""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from circuitbreaker import STATE_OPEN

from brokers.envelope import REGISTRY, Kind
from brokers.topology import COMMANDS, EVENTS
from ops.orders_readmodel import rebuild_read_model
from tests.e2e.orders_support import new_key, stocked_sku
from tests.e2e.support import User
from tests.helpers import breaker_state, eventually


async def test_an_order_is_reserved_paid_shipped_and_delivered(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=5)

    order_id = await shop.order(ann, sku, quantity=2)
    order = await shop.settled(ann, order_id)

    assert order["status"] == "delivered"
    history = [step["status"] for step in order["history"]]
    assert history == ["placed", "reserved", "confirmed", "shipped", "delivered"]
    assert await shop.stock(sku) == {"sku": sku, "on_hand": 3, "reserved": 0, "shipped": 2, "received": 5}
    assert (await shop.provider.stats()).charges == 1
    timeline = await eventually(
        lambda: shop.timeline(ann, order_id),
        until=lambda t: len(t["notifications"] or []) == 3,
        what="three notifications (confirmed, shipped, delivered)",
    )
    assert timeline["payment"]["status"] == "captured"
    assert timeline["payment"]["amount_cents"] == order["total_cents"]
    assert timeline["shipment"]["status"] == "delivered"
    await shop.assert_invariants_hold()


async def test_out_of_stock_cancels_the_order_and_charges_nothing(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=1)

    order = await shop.settled(ann, await shop.order(ann, sku, quantity=2))

    assert (order["status"], order["cancel_reason"]) == ("cancelled", "out_of_stock")
    assert (await shop.provider.stats()).charges == 0
    assert await shop.stock(sku) == {"sku": sku, "on_hand": 1, "reserved": 0, "shipped": 0, "received": 1}
    await shop.assert_invariants_hold()


async def test_a_declined_payment_cancels_the_order_and_releases_its_stock(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=3)
    await shop.provider.behave(decline_rate=1.0)

    order = await shop.settled(ann, await shop.order(ann, sku, quantity=2))

    assert (order["status"], order["cancel_reason"]) == ("cancelled", "payment_declined")
    await eventually(
        lambda: shop.stock(sku),
        until=lambda s: (s["on_hand"], s["reserved"]) == (3, 0),
        what="stock released",
    )
    assert (await shop.provider.stats()).charges == 0
    await shop.assert_invariants_hold()


async def test_a_customer_cancel_after_capture_is_refunded(open_shop, admin: User, ann: User):
    shop = await open_shop(emporium_carrier_step_ms=30_000)  # the parcel waits: cancelling is allowed
    sku = await stocked_sku(shop.edge, admin, quantity=2)
    order_id = await shop.order(ann, sku)
    await shop.settled(ann, order_id, status="confirmed")

    response = await shop.edge.post(f"/orders/{order_id}/cancel", headers=ann.headers)
    assert response.status_code == 202, response.text

    order = await shop.settled(ann, order_id)
    assert (order["status"], order["cancel_reason"]) == ("cancelled", "customer")
    await eventually(
        lambda: shop.provider.stats(), until=lambda s: (s.charges, s.refunds) == (1, 1), what="a refund"
    )
    await eventually(
        lambda: shop.stock(sku), until=lambda s: (s["on_hand"], s["reserved"]) == (2, 0), what="release"
    )
    await shop.assert_invariants_hold()


async def test_a_customer_cancel_before_capture_leaves_nothing_charged(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=2)
    await shop.provider.behave(latency_ms=1_500)  # the charge is on its way when the customer cancels
    order_id = await shop.order(ann, sku)
    await shop.settled(ann, order_id, status="reserved")

    response = await shop.edge.post(f"/orders/{order_id}/cancel", headers=ann.headers)
    assert response.status_code == 202, response.text

    order = await shop.settled(ann, order_id)
    assert (order["status"], order["cancel_reason"]) == ("cancelled", "customer")
    # A capture that was already under way is refunded: what is kept is nothing.
    await eventually(
        lambda: shop.provider.stats(),
        until=lambda s: s.charges == s.refunds,
        timeout=30,
        what="charges refunded",
    )
    await eventually(
        lambda: shop.stock(sku), until=lambda s: (s["on_hand"], s["reserved"]) == (2, 0), what="release"
    )
    await shop.assert_invariants_hold()


async def test_an_order_past_its_deadline_is_cancelled_and_compensated(open_shop, admin: User, ann: User):
    shop = await open_shop(emporium_order_deadline_ms=1_000)
    sku = await stocked_sku(shop.edge, admin, quantity=2)
    await shop.provider.behave(latency_ms=3_000)  # the provider answers after the deadline

    order = await shop.settled(ann, await shop.order(ann, sku))

    assert (order["status"], order["cancel_reason"]) == ("cancelled", "timeout")
    await shop.provider.behave(latency_ms=0)  # the provider recovers: the compensation can finish
    await eventually(
        lambda: shop.stock(sku), until=lambda s: (s["on_hand"], s["reserved"]) == (2, 0), what="release"
    )
    await eventually(
        lambda: shop.provider.stats(),
        until=lambda s: s.charges == s.refunds,
        timeout=30,
        what="late capture refunded",
    )
    await shop.assert_invariants_hold()


async def test_while_the_provider_is_down_the_breaker_opens_and_orders_complete_once_it_recovers(
    open_shop, monkeypatch, admin: User, ann: User
):
    monkeypatch.setenv("EMPORIUM_PAYMENT_BREAKER_RESET_S", "1")
    # A name of its own: no other test's breaker shows under it.
    monkeypatch.setenv("EMPORIUM_PAYMENT_PROVIDER_NAME", "outage-test")
    monkeypatch.setenv(
        "EMPORIUM_PAYMENT_BREAKER_FAILURES", "5"
    )  # one order: open it within its first retries
    # Retries long enough to outlast the outage (in production: 1 s, 5 s, 30 s).
    shop = await open_shop(emporium_retry_delays_ms=(300, 600, 1_200, 2_400, 4_800, 9_600))
    sku = await stocked_sku(shop.edge, admin, quantity=2)
    await shop.provider.behave(error_rate=1.0)

    order_id = await shop.order(ann, sku)

    await eventually(
        lambda: breaker_state("outage-test"),
        until=lambda state: state == STATE_OPEN,
        what="the breaker to open",
    )
    assert (await shop.settled(ann, order_id, status="reserved"))["status"] == "reserved"  # waiting, not lost
    await shop.provider.behave(error_rate=0.0)

    order = await shop.settled(ann, order_id, timeout=60)
    assert order["status"] == "delivered"
    assert (await shop.provider.stats()).charges == 1
    await shop.assert_invariants_hold()


async def test_the_same_request_twice_places_one_order(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=5)
    key = new_key()

    first = await shop.order(ann, sku, key=key)
    second = await shop.order(ann, sku, key=key)

    assert first == second
    await shop.settled(ann, first)
    mine = (await shop.edge.get("/orders", headers=ann.headers)).json()
    assert [o["order_id"] for o in mine["items"]] == [first]
    assert (await shop.provider.stats()).charges == 1


async def test_thirty_concurrent_orders_for_ten_units_confirm_exactly_ten(
    open_shop, admin: User, ann: User, bob: User
):
    # The deadline must not be what settles them: 30 sagas queue up at the embedded MongoDB.
    shop = await open_shop(emporium_order_deadline_ms=120_000)
    sku = await stocked_sku(shop.edge, admin, quantity=10)

    customers = [ann, bob] * 15
    order_ids = await asyncio.gather(*(shop.order(customer, sku) for customer in customers))
    # 30 sagas at once are some 500 transactions on one small machine: give them time.
    orders = await asyncio.gather(
        *(
            shop.settled(customer, oid, timeout=120)
            for customer, oid in zip(customers, order_ids, strict=True)
        )
    )

    outcomes = sorted((o["status"], o["cancel_reason"]) for o in orders)
    assert outcomes == [("cancelled", "out_of_stock")] * 20 + [("delivered", None)] * 10
    everything_shipped = {"sku": sku, "on_hand": 0, "reserved": 0, "shipped": 10, "received": 10}
    await eventually(
        lambda: shop.stock(sku), until=lambda s: s == everything_shipped, what="all ten committed"
    )
    assert (await shop.provider.stats()).charges == 10
    await shop.assert_invariants_hold()


class Duplicator:
    """Publishes every command and event of the vhost a second time, as a broker redelivery would."""

    COPY = "x-test-duplicate"

    def __init__(self, url: str) -> None:
        self._url = url
        self.copies = 0

    async def __aenter__(self) -> Duplicator:
        self._connection = await aio_pika.connect_robust(self._url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for exchange in (EVENTS, COMMANDS):
            declared = await self._channel.declare_exchange(
                exchange.name, type=exchange.type.value, durable=True, arguments=exchange.arguments
            )
            kind = Kind.EVENT if exchange is EVENTS else Kind.COMMAND
            for type_ in (t for t, c in REGISTRY.items() if c.KIND is kind):
                await queue.bind(declared, routing_key=type_)
        await queue.consume(self._copy)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def _copy(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            if (message.headers or {}).get(self.COPY):
                return
            exchange = await self._channel.get_exchange(message.exchange, ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers={**(message.headers or {}), self.COPY: True},
                    content_type=message.content_type,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=message.routing_key or "",
            )
            self.copies += 1


async def test_every_message_delivered_twice_changes_nothing(
    open_shop, settings, admin: User, ann: User, bob: User
):
    shop = await open_shop()
    async with Duplicator(shop.settings.rabbitmq_url) as duplicator:
        sku = await stocked_sku(shop.edge, admin, quantity=3)
        happy = await shop.order(ann, sku, quantity=2)
        short = await shop.order(bob, sku, quantity=2)
        assert (await shop.settled(ann, happy))["status"] == "delivered"
        assert (await shop.settled(bob, short))["cancel_reason"] == "out_of_stock"
        declined_sku = await stocked_sku(shop.edge, admin, quantity=1)
        await shop.provider.behave(decline_customers=[bob.user_id])
        declined = await shop.settled(bob, await shop.order(bob, declined_sku))

    assert declined["cancel_reason"] == "payment_declined"
    assert duplicator.copies > 20
    final = {"sku": sku, "on_hand": 1, "reserved": 0, "shipped": 2, "received": 3}
    await eventually(lambda: shop.stock(sku), until=lambda s: s == final, what="the final stock")
    assert (await shop.provider.stats()).charges == 1
    await shop.assert_invariants_hold()


async def test_the_rebuilt_orders_read_model_equals_the_live_one(open_shop, admin: User, ann: User):
    shop = await open_shop()
    sku = await stocked_sku(shop.edge, admin, quantity=2)
    ids = [await shop.order(ann, sku) for _ in range(3)]
    live = [await shop.settled(ann, order_id) for order_id in ids]

    assert await rebuild_read_model(shop.settings) == 3

    rebuilt = [(await shop.edge.get(f"/orders/{i}", headers=ann.headers)).json() for i in ids]
    assert rebuilt == live
