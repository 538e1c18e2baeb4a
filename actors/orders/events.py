"""What can happen to an order: the events its stream is made of. Pure: no I/O.

These are the orders actor's own facts, stored in its streams; they are not the public ``order.*``
contracts (those are announced from them, see ``domain.announcement``). Each event moves the order
to the status of the same name, so the stored ``type`` of an event is that status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from brokers.contracts.common import Cents, Currency, EntityId, Value
from brokers.contracts.orders import CancelReason, OrderLine, OrderStatus


class OrderEvent(Value):
    STATUS: ClassVar[OrderStatus]


class Placed(OrderEvent):
    """The order was accepted, its lines priced from the catalog replica at that moment."""

    STATUS = "placed"
    customer_id: EntityId
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    total_cents: Cents
    currency: Currency
    request_digest: str


class Reserved(OrderEvent):
    STATUS = "reserved"


class Confirmed(OrderEvent):
    STATUS = "confirmed"
    payment_id: EntityId


class CancellationRequested(OrderEvent):
    """The customer cancelled a confirmed order: cancelled once shipping has stopped its parcel."""

    STATUS = "cancelling"


class Shipped(OrderEvent):
    STATUS = "shipped"
    shipment_id: EntityId
    carrier: str
    tracking_number: str


class Delivered(OrderEvent):
    STATUS = "delivered"
    shipment_id: EntityId


class Cancelled(OrderEvent):
    STATUS = "cancelled"
    reason: CancelReason


EVENT_TYPES: dict[str, type[OrderEvent]] = {
    kind.STATUS: kind
    for kind in (Placed, Reserved, Confirmed, CancellationRequested, Shipped, Delivered, Cancelled)
}


def event_of(type_: str, data: dict[str, Any]) -> OrderEvent:
    """The event stored as ``type`` with ``data``."""
    return EVENT_TYPES[type_].model_validate(data)


@dataclass(frozen=True)
class Recorded:
    """An event in its stream: the order's ``version``-th event, recorded ``at``."""

    order_id: str
    version: int
    at: datetime
    event: OrderEvent
