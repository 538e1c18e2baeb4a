"""The payments actor's business metrics: money captured and refunded, observed after commit.

Two counters rather than one revenue figure: a counter only goes up, and a refund takes revenue
down. Revenue is their difference, ``emporium_payments_captured_cents_total -
emporium_payments_refunded_cents_total``, per currency (cents of different currencies never add up).
"""

from __future__ import annotations

from prometheus_client import Counter

from actors.payments.handlers import payments
from actors.payments.store import PaymentsStore
from brokers.contracts.common import DEFAULT_CURRENCY
from brokers.contracts.payments import PaymentCaptured, PaymentRefunded
from brokers.envelope import Envelope

CAPTURED_CENTS = Counter(
    "emporium_payments_captured_cents_total", "Money captured from customers, in cents", ["currency"]
)
REFUNDED_CENTS = Counter(
    "emporium_payments_refunded_cents_total", "Money refunded to customers, in cents", ["currency"]
)


def start_currency_at_zero(currency: str) -> None:
    """Create both series of a currency, so that the revenue of a currency (their difference) and
    a rate of its refunds exist before its first refund, and no first increase is lost to rate()."""
    CAPTURED_CENTS.labels(currency)
    REFUNDED_CENTS.labels(currency)


# Currencies are an open set: the default one from the start, any other from its first payment.
start_currency_at_zero(DEFAULT_CURRENCY)


@payments.observes(PaymentCaptured)
async def count_captured(event: PaymentCaptured, envelope: Envelope, store: PaymentsStore) -> None:
    start_currency_at_zero(event.currency)
    CAPTURED_CENTS.labels(event.currency).inc(event.amount_cents)


@payments.observes(PaymentRefunded)
async def count_refunded(event: PaymentRefunded, envelope: Envelope, store: PaymentsStore) -> None:
    start_currency_at_zero(event.currency)
    REFUNDED_CENTS.labels(event.currency).inc(event.amount_cents)
