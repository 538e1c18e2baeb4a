"""Orders: placing and cancelling orders, and the order events the saga turns on."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from brokers.contracts.common import Cents, Currency, EntityId, Line, Quantity, Sku, Value
from brokers.envelope import Command, Event, Query

CancelReason = Literal["out_of_stock", "payment_declined", "payment_unavailable", "timeout", "customer"]
# "cancelling": the customer cancelled a confirmed order; shipping decides whether the parcel can still
# be stopped (then "cancelled") or has already left (then "shipped").
OrderStatus = Literal["placed", "reserved", "confirmed", "cancelling", "shipped", "delivered", "cancelled"]


class OrderLine(Value):
    sku: Sku
    quantity: Quantity
    unit_price_cents: Cents


# --- commands --------------------------------------------------------------------------------


def _one_line_per_sku(lines: list[Line]) -> list[Line]:
    # Two lines of one SKU could sum past what a Line carries only later, in inventory.
    skus = [line.sku for line in lines]
    if len(set(skus)) != len(skus):
        raise ValueError("an order has one line per SKU (add the quantities up)")
    return lines


OrderLines = Annotated[list[Line], Field(min_length=1, max_length=100), AfterValidator(_one_line_per_sku)]


class PlaceOrder(Command, type="orders.place_order"):
    order_id: EntityId
    customer_id: EntityId
    lines: OrderLines
    # A digest of the request that placed it, so a reused idempotency key with another body is told apart.
    request_digest: str = Field(min_length=1, max_length=128)


class CancelOrder(Command, type="orders.cancel_order"):
    order_id: EntityId
    customer_id: EntityId


class ExpireOrder(Command, type="orders.expire_order"):
    """Sent by orders to itself, delayed by the order deadline."""

    order_id: EntityId


# --- events ----------------------------------------------------------------------------------


class OrderPlaced(Event, type="order.placed"):
    order_id: EntityId
    customer_id: EntityId
    lines: list[OrderLine] = Field(min_length=1, max_length=100)
    total_cents: Cents
    currency: Currency

    def partition_key(self) -> str:
        # Inventory reserves it against its SKUs' stock: one SKU's reservations queue in one
        # partition (an order of several SKUs goes with its first, by name).
        return min(line.sku for line in self.lines)


class OrderConfirmed(Event, type="order.confirmed"):
    order_id: EntityId
    customer_id: EntityId
    lines: list[OrderLine]
    total_cents: Cents
    currency: Currency


class OrderCancelled(Event, type="order.cancelled"):
    order_id: EntityId
    customer_id: EntityId
    reason: CancelReason


class OrderCancellationRequested(Event, type="order.cancellation_requested"):
    """The customer cancelled a confirmed order. Only shipping knows whether its parcel has left, so
    shipping answers: shipment.stopped (the order is then cancelled) or, too late, the dispatch."""

    order_id: EntityId
    customer_id: EntityId


class OrderShipped(Event, type="order.shipped"):
    order_id: EntityId
    customer_id: EntityId
    shipment_id: EntityId
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)


class OrderDelivered(Event, type="order.delivered"):
    order_id: EntityId
    customer_id: EntityId


# --- queries ---------------------------------------------------------------------------------


class OrderStep(Value):
    status: OrderStatus
    at: datetime
    reason: CancelReason | None = None


class OrderView(Value):
    order_id: EntityId
    customer_id: EntityId
    status: OrderStatus
    lines: list[OrderLine]
    total_cents: int
    currency: str
    cancel_reason: CancelReason | None = None
    request_digest: str
    placed_at: datetime
    updated_at: datetime
    history: list[OrderStep]
    version: int


class OrderPage(Value):
    items: list[OrderView]
    total: int
    offset: int
    limit: int


class GetOrder(Query, type="orders.get_order"):
    order_id: EntityId


class ListOrders(Query, type="orders.list_orders"):
    # None lists every customer's orders: for operators' tools (the edge always sets it).
    customer_id: EntityId | None = None
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(20, ge=1, le=100)


class QuoteOrder(Query, type="orders.quote_order"):
    """What these lines would cost placed now, priced as placing them would be; a 409 says why
    they could not be placed (an unknown SKU, two currencies, a total above the payable)."""

    lines: OrderLines


class OrderQuote(Value):
    lines: list[OrderLine]
    total_cents: Cents
    currency: Currency
