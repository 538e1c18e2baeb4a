"""Notification rules: what each event tells the customer, and the id that has it told once. Pure: no I/O.

A notification's id is derived from what it is about (the template and the order or user), not from
the message that brought the event: a redelivered message is skipped by the runtime's inbox, and a
copy of the event published again under another message id still names the same notification,
which the store keeps only once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import singledispatch

from brokers.contracts.identity import UserRegistered
from brokers.contracts.notifications import Channel, NotificationSent, NotificationView
from brokers.contracts.orders import (
    CancelReason,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderShipped,
)
from brokers.envelope import Event

REASONS: dict[CancelReason, str] = {
    "out_of_stock": "some of its items are out of stock",
    "payment_declined": "the payment was declined",
    "payment_unavailable": "we could not reach the payment service",
    "timeout": "it could not be confirmed in time",
    "customer": "you asked us to cancel it",
}


@dataclass(frozen=True)
class Notification:
    notification_id: str
    customer_id: str
    order_id: str | None
    template: str
    subject: str
    body: str


@dataclass(frozen=True)
class Sent:
    """A notification as it went out: by which channel, when, to the customer's address if one is known."""

    notification: Notification
    channel: Channel
    address: str | None
    sent_at: datetime

    def view(self) -> NotificationView:
        n = self.notification
        return NotificationView(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            order_id=n.order_id,
            channel=self.channel,
            template=n.template,
            subject=n.subject,
            body=n.body,
            sent_at=self.sent_at,
        )

    def announcement(self) -> NotificationSent:
        n = self.notification
        return NotificationSent(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            order_id=n.order_id,
            channel=self.channel,
            template=n.template,
        )


def notification_id(template: str, about: str) -> str:
    return "ntf_" + hashlib.sha256(f"{template}:{about}".encode()).hexdigest()[:32]


def money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def _about_order(template: str, order_id: str, customer_id: str, subject: str, body: str) -> Notification:
    return Notification(notification_id(template, order_id), customer_id, order_id, template, subject, body)


@singledispatch
def compose(event: Event) -> Notification:
    raise TypeError(f"no notification is sent for {event.TYPE}")


@compose.register
def _(event: OrderConfirmed) -> Notification:
    units, total = sum(line.quantity for line in event.lines), money(event.total_cents, event.currency)
    return _about_order(
        "order_confirmed",
        event.order_id,
        event.customer_id,
        f"Order {event.order_id} is confirmed",
        f"Thank you for your order {event.order_id}: {units} item(s) for {total}. "
        "We will let you know when it ships.",
    )


@compose.register
def _(event: OrderCancelled) -> Notification:
    return _about_order(
        "order_cancelled",
        event.order_id,
        event.customer_id,
        f"Order {event.order_id} is cancelled",
        f"Your order {event.order_id} was cancelled because {REASONS[event.reason]}. "
        "Any amount charged for it is refunded.",
    )


@compose.register
def _(event: OrderShipped) -> Notification:
    return _about_order(
        "order_shipped",
        event.order_id,
        event.customer_id,
        f"Order {event.order_id} is on its way",
        f"Your order {event.order_id} left with {event.carrier}, tracking number {event.tracking_number}.",
    )


@compose.register
def _(event: OrderDelivered) -> Notification:
    return _about_order(
        "order_delivered",
        event.order_id,
        event.customer_id,
        f"Order {event.order_id} is delivered",
        f"Your order {event.order_id} has been delivered. Enjoy it!",
    )


@compose.register
def _(event: UserRegistered) -> Notification:
    # The name stays out of the subject: it is free text, and a header must not carry line breaks.
    return Notification(
        notification_id("welcome", event.user_id),
        event.user_id,
        None,
        "welcome",
        "Welcome to emporium",
        f"Hello {event.name}, your account is ready. Happy shopping!",
    )
