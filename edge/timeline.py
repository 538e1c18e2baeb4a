"""An order's timeline: what orders, payments, shipping and notifications each know of it, in one answer.

The four actors are asked at once, each with its own short timeout, so the answer takes as long as
the slowest source or its timeout, never their sum. A source that does not answer in time, is not
deployed, or fails leaves its section empty and is listed in ``missing`` (``partial`` is true); a
source that does not know the order yet (payments and shipping come later in the saga) leaves its
section empty without being missing.

Only the order's customer may read it. Every section names the customer, so any source that
answered can tell: the timeline is refused (404, as for a missing order) when a source says the
order is someone else's, and when orders says there is no such order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from brokers.contracts.notifications import ListNotifications, NotificationPage, NotificationView
from brokers.contracts.orders import GetOrder, OrderStep, OrderView
from brokers.contracts.payments import GetPayment, PaymentView
from brokers.contracts.shipping import GetShipment, ShipmentView
from brokers.envelope import Query
from brokers.rpc import BrokerUnavailable, QueryFailed, QueryTimeout
from edge.link import RabbitLink
from edge.problems import OrderNotFound

T = TypeVar("T")
# Covariant: an answer is read, never written to, so an Answer[OrderView] is an Answer[object].
T_co = TypeVar("T_co", covariant=True)
Source = Literal["orders", "payments", "shipping", "notifications"]
Unanswered = QueryTimeout | BrokerUnavailable | QueryFailed


class MissingSource(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: Source
    reason: Literal["timeout", "unavailable", "failed"]
    detail: str


class TimelineStep(BaseModel):
    model_config = ConfigDict(frozen=True)
    at: datetime
    source: Source
    what: str


class Timeline(BaseModel):
    """Each section is null when its source knows nothing of the order yet, or is ``missing``."""

    model_config = ConfigDict(frozen=True)
    order_id: str
    partial: bool
    missing: list[MissingSource]
    order: OrderView | None
    payment: PaymentView | None
    shipment: ShipmentView | None
    notifications: list[NotificationView] | None
    steps: list[TimelineStep]


@dataclass(frozen=True)
class Answer(Generic[T_co]):
    """What one source said: its data (None when it does not know the order), or why it said nothing."""

    data: T_co | None = None
    failure: Unanswered | None = None

    @property
    def is_not_found(self) -> bool:
        """The source answered that it does not know the order (or whatever was asked)."""
        return self.data is None and self.failure is None

    def missing(self, source: Source) -> MissingSource | None:
        if self.failure is None:
            return None
        return MissingSource(source=source, reason=_reason(self.failure), detail=str(self.failure))


def _reason(failure: Unanswered) -> Literal["timeout", "unavailable", "failed"]:
    if isinstance(failure, QueryTimeout):
        return "timeout"
    if isinstance(failure, BrokerUnavailable):
        return "unavailable"
    return "failed"  # the actor answered with a problem


async def answer_of(asking: Awaitable[T]) -> Answer[T]:
    try:
        return Answer(data=await asking)
    except QueryFailed as exc:
        return Answer() if exc.problem.status == 404 else Answer(failure=exc)
    except (QueryTimeout, BrokerUnavailable) as exc:
        return Answer(failure=exc)


async def gather_timeline(
    link: RabbitLink, order_id: str, customer_id: str, *, correlation_id: str, timeout_s: float
) -> Timeline:
    def ask(query: Query, data_type: type[T]) -> Awaitable[Answer[T]]:
        return answer_of(link.ask(query, data_type, correlation_id=correlation_id, timeout_s=timeout_s))

    order, payment, shipment, notifications = await asyncio.gather(
        ask(GetOrder(order_id=order_id), OrderView),
        ask(GetPayment(order_id=order_id), PaymentView),
        ask(GetShipment(order_id=order_id), ShipmentView),
        ask(ListNotifications(order_id=order_id), NotificationPage),
    )
    return assemble(order_id, customer_id, order, payment, shipment, notifications)


def assemble(
    order_id: str,
    customer_id: str,
    order: Answer[OrderView],
    payment: Answer[PaymentView],
    shipment: Answer[ShipmentView],
    notifications: Answer[NotificationPage],
) -> Timeline:
    """The timeline of the answers, for ``customer_id`` only (see the module's docstring)."""
    sent = notifications.data.items if notifications.data is not None else None
    _check_owner(order_id, customer_id, order, [order.data, payment.data, shipment.data, *(sent or [])])
    answers: dict[Source, Answer[object]] = {
        "orders": order,
        "payments": payment,
        "shipping": shipment,
        "notifications": notifications,
    }
    missing = [m for source, answer in answers.items() if (m := answer.missing(source)) is not None]
    return Timeline(
        order_id=order_id,
        partial=bool(missing),
        missing=missing,
        order=order.data,
        payment=payment.data,
        shipment=shipment.data,
        notifications=sent,
        steps=steps_of(order.data, payment.data, shipment.data, sent or []),
    )


Section = OrderView | PaymentView | ShipmentView | NotificationView


def _check_owner(
    order_id: str, customer_id: str, order: Answer[OrderView], sections: list[Section | None]
) -> None:
    owners = {section.customer_id for section in sections if section is not None}
    if order.data is None and order.failure is None:
        raise OrderNotFound(order_id)  # orders itself says there is no such order
    if owners - {customer_id}:
        raise OrderNotFound(order_id)
    if not owners and order.failure is not None:
        raise order.failure  # orders did not answer, and nothing else shows whose order it is


def steps_of(
    order: OrderView | None,
    payment: PaymentView | None,
    shipment: ShipmentView | None,
    notifications: list[NotificationView],
) -> list[TimelineStep]:
    """What happened, from every section, oldest first."""
    steps: list[TimelineStep] = []
    if order is not None:
        steps += [_order_step(step) for step in order.history]
    if payment is not None:
        steps.append(TimelineStep(at=payment.updated_at, source="payments", what=f"payment {payment.status}"))
    if shipment is not None:
        steps += [
            TimelineStep(at=step.at, source="shipping", what=f"shipment {step.status}")
            for step in shipment.history
        ]
    steps += [
        TimelineStep(at=sent.sent_at, source="notifications", what=f"{sent.template} sent by {sent.channel}")
        for sent in notifications
    ]
    return sorted(steps, key=lambda step: step.at)


def _order_step(step: OrderStep) -> TimelineStep:
    what = f"order {step.status}" if step.reason is None else f"order {step.status}: {step.reason}"
    return TimelineStep(at=step.at, source="orders", what=what)
