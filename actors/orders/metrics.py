"""The orders actor's business metrics: observed from the order events it emitted, after commit.

Order counters count announcements, so an order is counted once however often the messages that
moved it were delivered. Placed -> confirmed is measured on the order's own clock: from its
``placed_at`` to the ``confirmed`` step of its history.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Histogram

from actors.orders.handlers import orders
from actors.orders.store import OrdersStore
from brokers.contracts.orders import (
    CancelReason,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderPlaced,
    OrderView,
)
from brokers.envelope import Envelope

PLACED = Counter("emporium_orders_placed_total", "Orders placed (accepted and priced)")
CONFIRMED = Counter(
    "emporium_orders_confirmed_total", "Orders confirmed (stock reserved and payment captured)"
)
DELIVERED = Counter("emporium_orders_delivered_total", "Orders delivered to their customer")
CANCELLED = Counter("emporium_orders_cancelled_total", "Orders cancelled, by reason", ["reason"])
CONFIRMATION_SECONDS = Histogram(
    "emporium_orders_confirmation_seconds",
    "Time from an order being placed to its confirmation (the order's own timestamps)",
    # A saga takes well under a second when all is well; payment retries stretch it towards the
    # order deadline (2 minutes by default).
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
# Every reason is a series from the start, so a rate over it exists before the first cancellation.
for _reason in get_args(CancelReason):
    CANCELLED.labels(_reason)


def confirmation_seconds(view: OrderView) -> float | None:
    """Seconds from placing to confirming the order; None if its history has no confirmation."""
    confirmed = next((step for step in view.history if step.status == "confirmed"), None)
    if confirmed is None:
        return None
    return (confirmed.at - view.placed_at).total_seconds()


@orders.observes(OrderPlaced)
async def count_placed(event: OrderPlaced, envelope: Envelope, store: OrdersStore) -> None:
    PLACED.inc()


@orders.observes(OrderConfirmed)
async def count_confirmed(event: OrderConfirmed, envelope: Envelope, store: OrdersStore) -> None:
    CONFIRMED.inc()
    seconds = confirmation_seconds(await store.view(event.order_id))
    if seconds is not None:
        CONFIRMATION_SECONDS.observe(seconds)


@orders.observes(OrderDelivered)
async def count_delivered(event: OrderDelivered, envelope: Envelope, store: OrdersStore) -> None:
    DELIVERED.inc()


@orders.observes(OrderCancelled)
async def count_cancelled(event: OrderCancelled, envelope: Envelope, store: OrdersStore) -> None:
    CANCELLED.labels(event.reason).inc()
