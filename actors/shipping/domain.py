"""Shipping rules: one shipment per confirmed order, moved scheduled -> dispatched -> delivered. Pure: no I/O.

Carrier reports are idempotent: a step already reached is reported again by the carrier simulation
and a webhook alike, and changes nothing. A report that skips a step (delivered while we still think
it is scheduled) means we missed the dispatch scan: the parcel did leave, so the shipment is
dispatched and then delivered, and both events are emitted in that order.

An order cancelled before dispatch stops its shipment: the carrier never takes the parcel, and
later reports for it change nothing. A cancellation after dispatch breaks the rule that orders may
only be cancelled until dispatch, and is refused for an operator to look at.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal

from actors.runtime.errors import RuleViolation
from brokers.contracts.orders import OrderConfirmed
from brokers.contracts.shipping import (
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentScheduled,
    ShipmentStep,
    ShipmentView,
)
from brokers.envelope import Event

# The carriers we ship with; each order goes to one of them, always the same for the same order.
CARRIERS: tuple[str, ...] = ("parcelwise", "swiftpost", "northwind-freight")

Target = Literal["dispatched", "delivered"]


class Status(StrEnum):
    SCHEDULED = "scheduled"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"


ROUTE: tuple[Status, ...] = (Status.SCHEDULED, Status.DISPATCHED, Status.DELIVERED)


@dataclass(frozen=True)
class Step:
    status: Status
    at: datetime


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    order_id: str
    customer_id: str
    carrier: str
    tracking_number: str
    history: tuple[Step, ...]
    cancelled_at: datetime | None = None
    # Bumped by every change, so a write can check nobody changed the shipment in between.
    version: int = 0

    @property
    def status(self) -> Status:
        return self.history[-1].status

    def view(self) -> ShipmentView:
        return ShipmentView(
            shipment_id=self.shipment_id, order_id=self.order_id, customer_id=self.customer_id,
            status=self.status.value, carrier=self.carrier, tracking_number=self.tracking_number,
            history=[ShipmentStep(status=step.status.value, at=step.at) for step in self.history],
            cancelled_at=self.cancelled_at,
        )


@dataclass(frozen=True)
class Outcome:
    shipment: Shipment | None = None  # the changed shipment; None when nothing changed
    events: tuple[Event, ...] = ()
    next_step: Target | None = None  # where the carrier simulation takes it next


NOTHING = Outcome()


def _digest(order_id: str) -> str:
    return hashlib.sha256(order_id.encode()).hexdigest()


def carrier_for(order_id: str) -> str:
    return CARRIERS[zlib.crc32(order_id.encode()) % len(CARRIERS)]


def shipment_id_for(order_id: str) -> str:
    # Derived, not random: a handler run again (transaction retry) names the same shipment.
    return "shp_" + _digest(order_id)[:24]


def tracking_number_for(carrier: str, order_id: str) -> str:
    return carrier[:2].upper() + str(int(_digest(order_id)[24:40], 16) % 10**12).zfill(12)


def schedule(order: OrderConfirmed, *, now: datetime) -> Outcome:
    carrier = carrier_for(order.order_id)
    shipment = Shipment(
        shipment_id=shipment_id_for(order.order_id), order_id=order.order_id, customer_id=order.customer_id,
        carrier=carrier, tracking_number=tracking_number_for(carrier, order.order_id),
        history=(Step(Status.SCHEDULED, now),), version=1,
    )
    scheduled = ShipmentScheduled(
        shipment_id=shipment.shipment_id, order_id=shipment.order_id, customer_id=shipment.customer_id,
        carrier=shipment.carrier, tracking_number=shipment.tracking_number,
    )
    return Outcome(shipment, (scheduled,), next_step="dispatched")


def advance(shipment: Shipment, to: Target, *, now: datetime) -> Outcome:
    if shipment.cancelled_at is not None:
        return NOTHING
    reached, wanted = ROUTE.index(shipment.status), ROUTE.index(Status(to))
    if wanted <= reached:
        return NOTHING
    steps = tuple(Step(status, now) for status in ROUTE[reached + 1 : wanted + 1])
    moved = replace(shipment, history=shipment.history + steps, version=shipment.version + 1)
    events = tuple(_announcement(moved, step.status) for step in steps)
    return Outcome(moved, events, next_step="delivered" if moved.status is Status.DISPATCHED else None)


def _announcement(shipment: Shipment, status: Status) -> Event:
    if status is Status.DISPATCHED:
        return ShipmentDispatched(
            shipment_id=shipment.shipment_id, order_id=shipment.order_id,
            carrier=shipment.carrier, tracking_number=shipment.tracking_number,
        )
    return ShipmentDelivered(shipment_id=shipment.shipment_id, order_id=shipment.order_id)


def cancel(shipment: Shipment, *, now: datetime) -> Outcome:
    if shipment.cancelled_at is not None:
        return NOTHING
    if shipment.status is not Status.SCHEDULED:
        raise RuleViolation(
            f"order {shipment.order_id} was cancelled after its shipment {shipment.shipment_id} "
            f"was {shipment.status}"
        )
    return Outcome(replace(shipment, cancelled_at=now, version=shipment.version + 1))
