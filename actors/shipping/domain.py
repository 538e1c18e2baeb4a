"""Shipping rules: one shipment per confirmed order, moved scheduled -> dispatched -> delivered. Pure: no I/O.

Carrier reports are idempotent: a step already reached is reported again by the carrier simulation
and a webhook alike, and changes nothing. A report that skips a step (delivered while we still think
it is scheduled) means we missed the dispatch scan: the parcel did leave, so the shipment is
dispatched and then delivered, and both events are emitted in that order.

Shipping is where "cancelled" meets "dispatched": a confirmed order's cancellation is a request
that shipping answers, because only shipping knows whether the parcel has left. Before dispatch it
stops the shipment (the carrier never takes the parcel; later reports change nothing) and says so
with shipment.stopped; after dispatch the request is too late and changes nothing (orders learns
the order was shipped from the dispatch itself). A request that arrives before the order's
order.confirmed (that event still in a retry) leaves a stopped record, so the shipment is never
scheduled.

Every decision about an order writes its one shipment document (keyed by order id, versioned):
two decisions taken at once about one order conflict in the database, and the loser decides again
on the winner's result.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal

from brokers.contracts.orders import OrderCancellationRequested, OrderConfirmed
from brokers.contracts.shipping import (
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentScheduled,
    ShipmentStep,
    ShipmentStopped,
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
    # Empty for a shipment stopped before it was scheduled: it never existed for the carrier.
    history: tuple[Step, ...]
    cancelled_at: datetime | None = None
    # Bumped by every change, so a write can check nobody changed the shipment in between.
    version: int = 0

    @property
    def status(self) -> Status | None:
        return self.history[-1].status if self.history else None

    @property
    def scheduled(self) -> bool:
        return bool(self.history)

    def view(self) -> ShipmentView:
        assert self.status is not None, "a shipment stopped before scheduling has no view"
        return ShipmentView(
            shipment_id=self.shipment_id,
            order_id=self.order_id,
            customer_id=self.customer_id,
            status=self.status.value,
            carrier=self.carrier,
            tracking_number=self.tracking_number,
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


def _new(
    order_id: str, customer_id: str, history: tuple[Step, ...], cancelled_at: datetime | None
) -> Shipment:
    carrier = carrier_for(order_id)
    return Shipment(
        shipment_id=shipment_id_for(order_id),
        order_id=order_id,
        customer_id=customer_id,
        carrier=carrier,
        tracking_number=tracking_number_for(carrier, order_id),
        history=history,
        cancelled_at=cancelled_at,
        version=1,
    )


def schedule(existing: Shipment | None, order: OrderConfirmed, *, now: datetime) -> Outcome:
    """order.confirmed: schedule the shipment. Known already (a copy of the event, or a cancellation
    that came first): nothing."""
    if existing is not None:
        return NOTHING
    shipment = _new(order.order_id, order.customer_id, (Step(Status.SCHEDULED, now),), None)
    scheduled = ShipmentScheduled(
        shipment_id=shipment.shipment_id,
        order_id=shipment.order_id,
        customer_id=shipment.customer_id,
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
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
            shipment_id=shipment.shipment_id,
            order_id=shipment.order_id,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
        )
    return ShipmentDelivered(shipment_id=shipment.shipment_id, order_id=shipment.order_id)


def stop(existing: Shipment | None, request: OrderCancellationRequested, *, now: datetime) -> Outcome:
    """order.cancellation_requested: stop the shipment unless the parcel has left.

    Not scheduled yet: a stopped record, so the order.confirmed still on its way schedules nothing.
    Stopped already: nothing. Dispatched or delivered: too late, nothing.
    """
    if existing is None:
        stopped = _new(request.order_id, request.customer_id, (), now)
        return Outcome(stopped, (ShipmentStopped(order_id=request.order_id),))
    if existing.cancelled_at is not None or existing.status is not Status.SCHEDULED:
        return NOTHING
    stopped = replace(existing, cancelled_at=now, version=existing.version + 1)
    return Outcome(stopped, (ShipmentStopped(order_id=existing.order_id, shipment_id=existing.shipment_id),))
