"""Payments: charges and refunds at the payment provider."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from brokers.contracts.common import Cents, Currency, EntityId, Value
from brokers.envelope import Event, Query

FailureReason = Literal["declined", "unavailable"]
PaymentStatus = Literal["pending", "captured", "failed", "refunded"]


class PaymentCaptured(Event, type="payment.captured"):
    payment_id: EntityId
    order_id: EntityId
    customer_id: EntityId
    amount_cents: Cents
    currency: Currency
    provider_reference: str = Field(min_length=1, max_length=128)


class PaymentFailed(Event, type="payment.failed"):
    order_id: EntityId
    customer_id: EntityId
    reason: FailureReason
    detail: str = Field("", max_length=500)


class PaymentRefunded(Event, type="payment.refunded"):
    payment_id: EntityId
    order_id: EntityId
    customer_id: EntityId
    amount_cents: Cents
    currency: Currency


class PaymentView(Value):
    payment_id: EntityId
    order_id: EntityId
    customer_id: EntityId
    status: PaymentStatus
    amount_cents: int
    currency: str
    provider_reference: str | None = None
    failure: str | None = None
    attempts: int
    updated_at: datetime


class GetPayment(Query, type="payments.get_payment"):
    order_id: EntityId


class PaymentPage(Value):
    items: list[PaymentView]
    total: int
    offset: int
    limit: int


class ListPayments(Query, type="payments.list_payments"):
    """Every payment GetPayment answers for, by order id: for operators' tools (the invariant checker)."""

    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(100, ge=1, le=500)
