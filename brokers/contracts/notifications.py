"""Notifications: one message to a customer per event that concerns them."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from brokers.contracts.common import EntityId, Value
from brokers.envelope import Event, Query

Channel = Literal["log", "email", "sms", "push"]


class NotificationSent(Event, type="notification.sent"):
    notification_id: EntityId
    customer_id: EntityId
    order_id: EntityId | None = None
    channel: Channel
    template: str = Field(min_length=1, max_length=64)


class NotificationView(Value):
    notification_id: EntityId
    customer_id: EntityId
    order_id: EntityId | None = None
    channel: Channel
    template: str
    subject: str
    body: str
    sent_at: datetime


class NotificationPage(Value):
    items: list[NotificationView]
    total: int


class ListNotifications(Query, type="notifications.list_notifications"):
    """Notifications of one customer, or of one order (at least one of the two)."""

    customer_id: EntityId | None = None
    order_id: EntityId | None = None
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(50, ge=1, le=200)
