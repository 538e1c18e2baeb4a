"""An order's saga over Server-Sent Events, through the edge, on the real orders actor.

The orders actor holds the orders; the rest of each saga is published by the test the way the other
actors would publish it (correlation id = order id), so the test knows exactly what happened.
Events the orders actor itself reacts to are left out, so that the events it announces are only
the ones each test makes it announce.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote, urlsplit

import httpx

from brokers.contracts.catalog import ProductCreated
from brokers.contracts.common import Line
from brokers.contracts.notifications import NotificationSent
from brokers.contracts.orders import (
    CancelOrder,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderShipped,
    PlaceOrder,
)
from brokers.contracts.shipping import ShipmentScheduled
from brokers.envelope import Envelope, Event
from brokers.factory import connection_name
from brokers.settings import Settings
from edge.app import create_app
from edge.events import SAGA_EVENTS_ROLE, SagaEvents
from edge.link import APP_NAME
from tests.e2e.orders_support import Sse, queries_answered, sse_events, wait_for_order
from tests.e2e.support import (
    User,
    assert_problem,
    assert_unauthenticated,
    edge_settings,
    messages_taken,
    serving,
)
from tests.helpers import eventually, send

SKU = "SSE-MUG"
LINE = OrderLine(sku=SKU, quantity=1, unit_price_cents=500)
FOLLOW_S = 15.0


async def _orders_know_the_mug(broker) -> None:
    learnt = await messages_taken("orders", "product.created", "applied")
    created = ProductCreated(
        product_id=f"p-{uuid.uuid4().hex[:8]}",
        sku=SKU,
        name="Mug",
        category="kitchen",
        price_cents=500,
        currency="EUR",
    )
    await send(broker, created)
    await eventually(
        lambda: messages_taken("orders", "product.created", "applied"),
        until=lambda now: now > learnt,
        what="orders to learn the price",
    )


async def _send_place_order(broker, order_id: str, customer_id: str) -> None:
    """PlaceOrder as the edge sends it: correlated by the order id."""
    command = PlaceOrder(
        order_id=order_id, customer_id=customer_id, lines=[Line(sku=SKU, quantity=1)], request_digest="d"
    )
    await send(broker, command, correlation_id=order_id)


async def _placed(broker, edge: httpx.AsyncClient, customer: User) -> str:
    """An order of ``customer`` the orders actor holds, placed; its id."""
    await _orders_know_the_mug(broker)
    order_id = uuid.uuid4().hex
    await _send_place_order(broker, order_id, customer.user_id)
    await wait_for_order(edge, customer, order_id)
    return order_id


def _rest_of_saga(order_id: str, customer_id: str, ending: Event) -> list[Event]:
    """What the other actors announce of a confirmed order, up to ``ending`` (none of it moves orders)."""
    shipment = {"shipment_id": f"s-{order_id[:8]}", "carrier": "sim", "tracking_number": "TN-1"}
    return [
        OrderConfirmed(
            order_id=order_id, customer_id=customer_id, lines=[LINE], total_cents=500, currency="EUR"
        ),
        ShipmentScheduled(order_id=order_id, customer_id=customer_id, **shipment),
        NotificationSent(
            notification_id=f"n-{order_id[:8]}",
            customer_id=customer_id,
            order_id=order_id,
            channel="log",
            template="order_confirmed",
        ),
        OrderShipped(order_id=order_id, customer_id=customer_id, **shipment),
        ending,
    ]


async def _publish(broker, events: list[Event], order_id: str) -> list[Envelope]:
    return [await send(broker, event, correlation_id=order_id) for event in events]


def _saga_part(received: list[Sse]) -> list[tuple[str | None, str | None]]:
    # The orders actor's own order.placed may arrive after the snapshot: it repeats what that showed.
    return [(e.event, e.id) for e in received if e.event not in ("snapshot", "order.placed")]


async def _follow_to_the_end(events: AsyncIterator[Sse], received: list[Sse]) -> None:
    async with asyncio.timeout(FOLLOW_S):
        async for event in events:
            received.append(event)


async def test_a_follower_gets_the_order_then_its_saga_in_order_until_it_is_delivered(
    start_host, broker, edge: httpx.AsyncClient, ann: User
) -> None:
    await start_host("orders")
    order_id, other_id = await _placed(broker, edge, ann), uuid.uuid4().hex
    saga = _rest_of_saga(order_id, ann.user_id, OrderDelivered(order_id=order_id, customer_id=ann.user_id))
    received: list[Sse] = []

    async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response)
        first = await anext(events)
        assert (first.event, first.json()["order_id"], first.json()["status"]) == (
            "snapshot",
            order_id,
            "placed",
        )
        sent = await _publish(broker, saga[:2], order_id)
        # Another order's saga, in between: not this follower's business.
        await _publish(
            broker,
            _rest_of_saga(
                other_id,
                ann.user_id,
                OrderCancelled(order_id=other_id, customer_id=ann.user_id, reason="customer"),
            ),
            other_id,
        )
        sent += await _publish(broker, saga[2:], order_id)
        await _follow_to_the_end(events, received)

    assert _saga_part(received) == [(envelope.type, envelope.message_id) for envelope in sent]
    assert [e.json() for e in received if e.id in {s.message_id for s in sent}] == [
        event.model_dump(mode="json") for event in saga
    ]
    assert all(e.json()["order_id"] == order_id for e in received)


async def test_the_stream_ends_when_the_order_is_cancelled(
    start_host, broker, edge: httpx.AsyncClient, ann: User
) -> None:
    await start_host("orders")
    order_id = await _placed(broker, edge, ann)
    cancelled = OrderCancelled(order_id=order_id, customer_id=ann.user_id, reason="payment_declined")
    received: list[Sse] = []

    async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
        events = sse_events(response)
        await anext(events)  # the snapshot: following has begun
        [sent] = await _publish(broker, [cancelled], order_id)
        await _follow_to_the_end(events, received)

    assert _saga_part(received) == [("order.cancelled", sent.message_id)]


async def test_an_order_placed_a_moment_after_following_began_is_followed_from_its_placing(
    start_host, broker, edge: httpx.AsyncClient, ann: User
) -> None:
    await start_host("orders")
    await _orders_know_the_mug(broker)
    order_id = uuid.uuid4().hex
    not_found = await queries_answered("orders", "orders.get_order", "not_found")
    received: list[Sse] = []

    async def follow() -> None:
        async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
            assert response.status_code == 200, await response.aread()
            await _follow_to_the_end(sse_events(response), received)

    following = asyncio.create_task(follow())
    # Orders has told the edge there is no such order yet: the edge now waits for it to be placed.
    await eventually(
        lambda: queries_answered("orders", "orders.get_order", "not_found"),
        until=lambda now: now > not_found,
        what="the edge to ask orders",
    )
    await _send_place_order(broker, order_id, ann.user_id)
    await wait_for_order(edge, ann, order_id)
    [sent] = await _publish(
        broker, [OrderCancelled(order_id=order_id, customer_id=ann.user_id, reason="customer")], order_id
    )
    await asyncio.wait_for(following, FOLLOW_S)

    assert [e.event for e in received] == ["order.placed", "order.cancelled"]
    assert received[0].json()["customer_id"] == ann.user_id
    assert received[1].id == sent.message_id


async def test_an_order_that_already_ended_is_its_snapshot_alone(
    start_host, broker, edge: httpx.AsyncClient, ann: User
) -> None:
    await start_host("orders")
    order_id = await _placed(broker, edge, ann)
    await send(broker, CancelOrder(order_id=order_id, customer_id=ann.user_id), correlation_id=order_id)
    await wait_for_order(edge, ann, order_id, until=lambda order: order["status"] == "cancelled")
    received: list[Sse] = []

    async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
        await _follow_to_the_end(sse_events(response), received)

    assert [(e.event, e.json()["status"], e.json()["cancel_reason"]) for e in received] == [
        ("snapshot", "cancelled", "customer")
    ]


async def test_another_customers_order_is_refused_like_a_missing_one_after_the_same_wait(
    start_host, broker, serve_edge, ann: User, bob: User
) -> None:
    await start_host("orders")
    edge = await serve_edge(emporium_query_timeout_s=1.0)
    order_id = await _placed(broker, edge, ann)

    async def refused(order: str) -> tuple[dict, float]:
        started = time.monotonic()
        response = await edge.get(f"/orders/{order}/events", headers=bob.headers)
        return assert_problem(response, 404), time.monotonic() - started

    (theirs, their_wait), (missing, missing_wait) = await refused(order_id), await refused("no-such-order")

    assert theirs["detail"].replace(order_id, "ID") == missing["detail"].replace("no-such-order", "ID")
    assert 1.0 <= their_wait < 3.0 and 1.0 <= missing_wait < 3.0
    assert "access token" in assert_unauthenticated(await edge.get(f"/orders/{order_id}/events"))["detail"]


def _vhost(settings: Settings) -> str:
    return unquote(urlsplit(settings.rabbitmq_url).path.removeprefix("/"))


async def test_a_lost_subscription_ends_streams_with_a_dropped_event_and_comes_back(
    start_host, broker, settings: Settings, management: httpx.Client, edge: httpx.AsyncClient, ann: User
) -> None:
    await start_host("orders")
    order_id = await _placed(broker, edge, ann)
    received: list[Sse] = []

    def subscription() -> list[str]:
        connections = management.get(f"/api/vhosts/{quote(_vhost(settings), safe='')}/connections").json()
        return [
            c["name"]
            for c in connections
            if c.get("client_properties", {}).get("connection_name")
            == connection_name(APP_NAME, SAGA_EVENTS_ROLE)
        ]

    async def listed() -> list[str]:
        return subscription()

    # The management API lists a connection once its statistics are collected: seconds, more on a busy machine.
    [name] = await eventually(listed, timeout=60, what="the edge's subscription in the management API")
    async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
        events = sse_events(response)
        await anext(events)
        management.delete(f"/api/connections/{quote(name, safe='')}").raise_for_status()
        await _follow_to_the_end(events, received)

    assert [e.event for e in received] == ["dropped"]
    assert received[0].json()["reason"] == "interrupted"
    # The subscription comes back on its own, and following works again.
    await eventually(
        lambda: edge.get("/ready"), until=lambda r: r.status_code == 200, what="the edge to be ready"
    )
    async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
        events = sse_events(response)
        assert (await anext(events)).event == "snapshot"
        delivered = OrderDelivered(order_id=order_id, customer_id=ann.user_id)
        [sent] = await _publish(broker, [delivered], order_id)
        received = []
        await _follow_to_the_end(events, received)
    assert _saga_part(received) == [("order.delivered", sent.message_id)]


async def test_a_follower_that_leaves_is_forgotten(start_host, broker, settings: Settings, ann: User) -> None:
    await start_host("orders")
    app = create_app(edge_settings(settings))
    subscription = app.state.link.saga_events
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10.0) as edge:
        order_id = await _placed(broker, edge, ann)
        async with edge.stream("GET", f"/orders/{order_id}/events", headers=ann.headers) as response:
            await anext(sse_events(response))
            assert subscription.following == 1
        # The client went away in the middle of the saga: the edge stops following for it.
        await eventually(
            lambda: _following(subscription), until=lambda now: now == 0, what="the follow to end"
        )


async def _following(subscription: SagaEvents) -> int:
    return subscription.following
