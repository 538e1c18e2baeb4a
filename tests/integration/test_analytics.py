"""Analytics on the real servers: a scripted set of order and payment events (some out of order,
some published twice, one delivered twice) and every figure of GetStats checked exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.runtime.outbox import applied_messages
from brokers.contracts.analytics import GetStats, Percentiles, Stats, TopProduct
from brokers.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderPlaced,
    OrderShipped,
)
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from brokers.envelope import Envelope, Event
from brokers.factory import publish
from tests.helpers import eventually
from tests.integration.support import requester
from tests.orders_examples import order_confirmed, order_placed, priced_lines

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
PRICES = {"A": 1_000, "B": 500, "C": 3_000}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def placed(order_id: str, **quantities: int) -> OrderPlaced:
    return order_placed(order_id, "c-1", priced_lines(PRICES, **quantities))


def captured(order: OrderPlaced) -> PaymentCaptured:
    return PaymentCaptured(
        payment_id=f"pay-{order.order_id}",
        order_id=order.order_id,
        customer_id="c-1",
        amount_cents=order.total_cents,
        currency="EUR",
        provider_reference=f"ref-{order.order_id}",
    )


def shipped(order_id: str) -> OrderShipped:
    return OrderShipped(
        order_id=order_id, customer_id="c-1", shipment_id=f"s-{order_id}", carrier="x", tracking_number="t"
    )


O1, O2, O3 = placed("o-1", A=2, B=1), placed("o-2", A=1), placed("o-3", B=3)
O4, O5, O6, O7 = placed("o-4", C=1), placed("o-5", A=1, C=2), placed("o-6", B=2), placed("o-7", C=1)
O5_REFUNDED = PaymentRefunded(
    payment_id="pay-o-5", order_id="o-5", customer_id="c-1", amount_cents=7_000, currency="EUR"
)

# (event, when it happened); o-7's confirmation comes before its placing.
SCRIPT: list[tuple[Event, datetime]] = [
    (O1, at(0)),
    (captured(O1), at(1)),
    (order_confirmed(O1), at(2)),
    (shipped("o-1"), at(5)),
    (OrderDelivered(order_id="o-1", customer_id="c-1"), at(8)),
    (O2, at(0)),
    (captured(O2), at(3)),
    (order_confirmed(O2), at(4)),
    (shipped("o-2"), at(6)),
    (O3, at(0)),
    (OrderCancelled(order_id="o-3", customer_id="c-1", reason="out_of_stock"), at(1)),
    (O4, at(0)),
    (PaymentFailed(order_id="o-4", customer_id="c-1", reason="declined"), at(2)),
    (OrderCancelled(order_id="o-4", customer_id="c-1", reason="payment_declined"), at(3)),
    (O5, at(0)),
    (captured(O5), at(9)),
    (order_confirmed(O5), at(10)),
    (OrderCancelled(order_id="o-5", customer_id="c-1", reason="customer"), at(12)),
    (O5_REFUNDED, at(20)),
    (O6, at(0)),
    (order_confirmed(O7), at(1)),
    (captured(O7), at(1)),
    (O7, at(0)),
]
# The same events published again under new message ids, some with other times: they change nothing.
REPUBLISHED: list[tuple[Event, datetime]] = [
    (O1, at(5)),
    (order_confirmed(O1), at(3)),
    (captured(O2), at(4)),
    (O3, at(0)),
    (OrderCancelled(order_id="o-5", customer_id="c-1", reason="customer"), at(13)),
    (shipped("o-2"), at(7)),
]


async def tell(broker, event: Event, when: datetime) -> Envelope:
    envelope = Envelope.first(event, event.order_id).model_copy(update={"occurred_at": when})
    await publish(broker, event, envelope)
    return envelope


async def test_every_figure_follows_the_events_once(start_host, broker, mongo, settings):
    await start_host("analytics")
    for event, when in SCRIPT:
        await tell(broker, event, when)
    for event, when in REPUBLISHED:
        await tell(broker, event, when)
    await publish(broker, O5_REFUNDED, await tell(broker, O5_REFUNDED, at(20)))  # the same message twice
    distinct = len(SCRIPT) + len(REPUBLISHED) + 1
    db = mongo[settings.database_name("analytics")]
    await eventually(
        lambda: applied_messages(db),
        until=lambda applied: len(applied) == distinct,
        what="every distinct message",
    )

    async with requester(settings) as asker:
        stats = await asker.ask(GetStats(), Stats)
        top_two = await asker.ask(GetStats(top=2), Stats)

    assert stats.orders_by_status == {
        "placed": 1,
        "confirmed": 1,
        "shipped": 1,
        "delivered": 1,
        "cancelled": 3,
    }
    assert stats.cancellations_by_reason == {
        "out_of_stock": 1,
        "payment_declined": 1,
        "payment_unavailable": 0,
        "timeout": 0,
        "customer": 1,
    }
    assert stats.payment_failures_by_reason == {"declined": 1, "unavailable": 0}
    # Captured 2500 + 1000 + 7000 + 3000, of which o-5's 7000 refunded.
    assert (stats.revenue_cents, stats.refunded_cents) == (6_500, 7_000)
    # Sold: o-1 (2500), o-2 (1000), o-7 (3000); o-5 was confirmed, then cancelled.
    assert stats.average_order_value_cents == 2_167
    assert stats.top_products == [
        TopProduct(sku="A", units=3, revenue_cents=3_000),
        TopProduct(sku="C", units=1, revenue_cents=3_000),
        TopProduct(sku="B", units=1, revenue_cents=500),
    ]
    assert top_two.top_products == stats.top_products[:2]
    # Placed -> confirmed: o-7 1 s, o-1 2 s, o-2 4 s, o-5 10 s (nearest rank).
    assert stats.saga_seconds == Percentiles(count=4, p50_s=2.0, p90_s=10.0, p99_s=10.0)
    assert stats.as_of == at(20)


async def test_stats_before_any_event(start_host, settings):
    await start_host("analytics")
    async with requester(settings) as asker:
        stats = await asker.ask(GetStats(), Stats)
    assert stats.orders_by_status == {
        s: 0 for s in ("placed", "confirmed", "shipped", "delivered", "cancelled")
    }
    assert (stats.revenue_cents, stats.average_order_value_cents, stats.top_products) == (0, None, [])
    assert stats.saga_seconds == Percentiles(count=0) and stats.as_of is None
