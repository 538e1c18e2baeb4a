"""Shipping: shipments for confirmed orders, moved along by the carrier."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from brokers.contracts.common import EntityId, Value
from brokers.envelope import Command, Event, Query

ShipmentStatus = Literal["scheduled", "dispatched", "delivered"]
Carrier = str
TrackingNumber = str


class AdvanceShipment(Command, type="shipping.advance_shipment"):
    """The carrier reports progress (webhook, admin, or the carrier simulation)."""

    order_id: EntityId
    to: Literal["dispatched", "delivered"]


class ShipmentScheduled(Event, type="shipment.scheduled"):
    shipment_id: EntityId
    order_id: EntityId
    customer_id: EntityId
    carrier: Carrier = Field(min_length=1, max_length=64)
    tracking_number: TrackingNumber = Field(min_length=1, max_length=64)


class ShipmentDispatched(Event, type="shipment.dispatched"):
    shipment_id: EntityId
    order_id: EntityId
    carrier: Carrier = Field(min_length=1, max_length=64)
    tracking_number: TrackingNumber = Field(min_length=1, max_length=64)


class ShipmentDelivered(Event, type="shipment.delivered"):
    shipment_id: EntityId
    order_id: EntityId


class ShipmentStopped(Event, type="shipment.stopped"):
    """A cancellation reached shipping before dispatch: the carrier never takes the parcel."""

    order_id: EntityId
    # None when the cancellation arrived before the shipment was scheduled.
    shipment_id: EntityId | None = None


class ShipmentStep(Value):
    status: ShipmentStatus
    at: datetime


class ShipmentView(Value):
    shipment_id: EntityId
    order_id: EntityId
    customer_id: EntityId
    status: ShipmentStatus
    carrier: str
    tracking_number: str
    history: list[ShipmentStep]
    # Set when the order was cancelled before dispatch: the carrier never takes the parcel.
    cancelled_at: datetime | None = None


class GetShipment(Query, type="shipping.get_shipment"):
    order_id: EntityId
