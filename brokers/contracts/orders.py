"""Orders: the events other actors react to (the order actor's own commands come with it)."""

from typing import Literal

from pydantic import Field

from brokers.contracts.common import Cents, Currency, EntityId, Quantity, Sku, Value
from brokers.envelope import Event

CancelReason = Literal["out_of_stock", "payment_declined", "payment_unavailable", "timeout", "customer"]


class OrderLine(Value):
    sku: Sku
    quantity: Quantity
    unit_price_cents: Cents


class OrderPlaced(Event, type="order.placed"):
    order_id: EntityId
    customer_id: EntityId
    lines: list[OrderLine] = Field(min_length=1, max_length=100)
    total_cents: Cents
    currency: Currency


class OrderCancelled(Event, type="order.cancelled"):
    order_id: EntityId
    reason: CancelReason
