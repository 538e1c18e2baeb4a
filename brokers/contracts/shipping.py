"""Shipping: the shipment events other actors react to."""

from pydantic import Field

from brokers.contracts.common import EntityId
from brokers.envelope import Event


class ShipmentDispatched(Event, type="shipment.dispatched"):
    shipment_id: EntityId
    order_id: EntityId
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)
