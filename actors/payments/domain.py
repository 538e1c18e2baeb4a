"""Payment rules, one account per order. Pure: no I/O.

An account holds what payments knows of an order: its replica of order.placed, whether its stock
is reserved and whether it was cancelled, and the payment once the provider has answered. The rules:

- an order is charged once both its order.placed and its stock.reserved are in, whichever came
  first (they travel apart); once, for its total, with the order id as idempotency key;
- a cancelled order is never charged, whatever comes after its cancel (a late reservation included);
- the provider's first definite answer is final: a capture, or a decline (never retried);
- a provider that stays unavailable through every retry of the charge fails it as "unavailable";
- a cancelled order whose charge may have been taken without payments knowing it (asked with no
  answer recorded, or failed as unavailable) is looked up under its key, never charged again;
- a capture of a cancelled order is refunded, whichever of the two payments learns first (a capture
  found by a lookup included).

The provider is asked outside the transaction (record the intent, call, record the answer): a
handler's first step reads the committed account, applies its fact and asks what is then due (a
charge, a lookup, a refund; ``Asked``); its transaction reads the account again, applies the same
fact and records the answers (``settle``). Every handler of an order writes its one account, so
across replicas too two handlers of an order conflict and one decides again on the other's result.
If that result needs an answer that was not asked for (a charge taken for an order cancelled
meanwhile now needs its refund), the handler raises ConcurrentUpdate and is asked again later: a
capture of a cancelled order is never left unrefunded, and nothing is charged twice, since every
request carries its idempotency key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from actors.runtime.errors import ConcurrentUpdate, NotFound
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentView
from brokers.envelope import Event

_PAYMENT_IDS = uuid.UUID("5d0c4f3e-6a59-4c1b-9a43-2f0f7f1b6a10")
_DETAIL_LIMIT = 500
_UNAVAILABLE = "unavailable: "  # how a payment failed for want of an answer begins


class Status(StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    FAILED = "failed"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    total_cents: int
    currency: str


@dataclass(frozen=True)
class Payment:
    status: Status
    attempts: int
    provider_reference: str | None = None  # the provider's charge id
    refund_reference: str | None = None
    failure: str | None = None

    @property
    def unanswered(self) -> bool:
        """Failed because the provider never answered: the charge may have been captured all the same."""
        return self.status is Status.FAILED and (self.failure or "").startswith(_UNAVAILABLE)


@dataclass(frozen=True)
class Account:
    order_id: str
    updated_at: datetime
    order: Order | None = None
    reserved: bool = False
    cancelled: bool = False
    payment: Payment | None = None

    @property
    def known_order(self) -> Order:
        if self.order is None:  # the callers check first: this is a bug
            raise ValueError(f"order {self.order_id} is not known to payments")
        return self.order


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    amount_cents: int
    currency: str
    customer_id: str


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str
    charge_id: str
    amount_cents: int


@dataclass(frozen=True)
class Captured:
    charge_id: str
    attempts: int


@dataclass(frozen=True)
class Declined:
    reason: str
    attempts: int


@dataclass(frozen=True)
class Unavailable:
    detail: str
    attempts: int


ChargeOutcome = Captured | Declined | Unavailable


@dataclass(frozen=True)
class Change:
    account: Account
    events: tuple[Event, ...] = ()

    def then(self, later: Change) -> Change:
        return Change(later.account, self.events + later.events)


def payment_id(order_id: str) -> str:
    """One payment per order, so its id is derived from the order id (the same on every re-run)."""
    return uuid.uuid5(_PAYMENT_IDS, order_id).hex


def placed(account: Account | None, order: Order, at: datetime) -> Account:
    """Remember the order; a replay changes nothing (an order's total never changes)."""
    if account is None:
        return Account(order.order_id, updated_at=at, order=order)
    if account.order is not None:
        return account
    return replace(account, order=order, updated_at=at)


def reserved(account: Account | None, order_id: str, at: datetime) -> Account:
    if account is None:
        return Account(order_id, updated_at=at, reserved=True)
    if account.reserved:
        return account
    return replace(account, reserved=True, updated_at=at)


def cancelled(account: Account | None, order_id: str, at: datetime) -> Account:
    if account is None:
        return Account(order_id, updated_at=at, cancelled=True)
    if account.cancelled:
        return account
    return replace(account, cancelled=True, updated_at=at)


def charge_due(account: Account) -> ChargeRequest | None:
    """What to ask the provider for: None until the order is placed and reserved, once answered, and
    once cancelled (a terminal order starts no new work)."""
    order = account.order
    if order is None or not account.reserved or account.payment is not None or account.cancelled:
        return None
    return ChargeRequest(
        idempotency_key=_charge_key(order),
        amount_cents=order.total_cents,
        currency=order.currency,
        customer_id=order.customer_id,
    )


def lookup_due(account: Account) -> str | None:
    """The idempotency key to ask the provider about, or None: what a cancelled order may have been
    charged without payments knowing it.

    That is a charge asked (the order known and reserved) with no definite answer: none recorded (a
    handling that asked then conflicted with the cancel or failed, and now runs again), or a payment
    failed as unavailable (a request that timed out may have been captured all the same). Charging
    again to find out would charge orders that never were charged; a lookup takes nothing.
    """
    order, payment = account.order, account.payment
    if not account.cancelled or order is None or not account.reserved:
        return None
    if payment is None or payment.unanswered:
        return _charge_key(order)
    return None


def _charge_key(order: Order) -> str:
    return order.order_id  # one charge per order: the order id is its idempotency key


def charged(account: Account, outcome: ChargeOutcome, at: datetime) -> Change:
    order = account.known_order
    match outcome:
        case Captured(charge_id, attempts):
            payment = Payment(Status.CAPTURED, attempts, provider_reference=charge_id)
            event: Event = PaymentCaptured(
                payment_id=payment_id(order.order_id),
                order_id=order.order_id,
                customer_id=order.customer_id,
                amount_cents=order.total_cents,
                currency=order.currency,
                provider_reference=charge_id,
            )
        case Declined(reason, attempts):
            payment = Payment(Status.FAILED, attempts, failure=f"declined: {reason}")
            event = PaymentFailed(
                order_id=order.order_id,
                customer_id=order.customer_id,
                reason="declined",
                detail=reason[:_DETAIL_LIMIT],
            )
        case Unavailable(detail, attempts):
            payment = Payment(Status.FAILED, attempts, failure=f"{_UNAVAILABLE}{detail}"[:_DETAIL_LIMIT])
            event = PaymentFailed(
                order_id=order.order_id,
                customer_id=order.customer_id,
                reason="unavailable",
                detail=detail[:_DETAIL_LIMIT],
            )
    return Change(replace(account, payment=payment, updated_at=at), (event,))


def refund_due(account: Account) -> RefundRequest | None:
    """A capture of a cancelled order is given back, once."""
    payment, order = account.payment, account.order
    if not account.cancelled or order is None or payment is None or payment.status is not Status.CAPTURED:
        return None
    charge_id = payment.provider_reference or ""  # a capture always has the provider's charge id
    return RefundRequest(
        idempotency_key=f"refund-{order.order_id}", charge_id=charge_id, amount_cents=order.total_cents
    )


def refunded(account: Account, refund_id: str, at: datetime) -> Change:
    order, payment = account.known_order, account.payment
    if payment is None:  # the callers check first: this is a bug
        raise ValueError(f"order {account.order_id} has no payment to refund")
    event = PaymentRefunded(
        payment_id=payment_id(order.order_id),
        order_id=order.order_id,
        customer_id=order.customer_id,
        amount_cents=order.total_cents,
        currency=order.currency,
    )
    payment = replace(payment, status=Status.REFUNDED, refund_reference=refund_id)
    return Change(replace(account, payment=payment, updated_at=at), (event,))


@dataclass(frozen=True)
class Asked:
    """What the provider answered before the transaction: under the order's key (``key_asked``: a
    charge or a lookup; ``answer`` None when a lookup found nothing) and to the refund of its capture."""

    key_asked: bool = False
    answer: ChargeOutcome | None = None
    refund_id: str | None = None


def after_answer(account: Account, answer: ChargeOutcome | None, at: datetime) -> Change:
    """The account once the provider's answer under its key is recorded (nothing found: unchanged)."""
    return Change(account) if answer is None else charged(account, answer, at)


def settle(account: Account, asked: Asked | None, at: datetime) -> Change:
    """Record what the provider answered, as the account now stands; ConcurrentUpdate when it moved
    past what was asked (another handler of the order committed in between): ask again."""
    asked = asked or Asked()
    change = Change(account)
    if charge_due(account) is not None or lookup_due(account) is not None:
        if not asked.key_asked:
            raise ConcurrentUpdate(f"order {account.order_id}: a charge or lookup is due that was not asked")
        change = after_answer(account, asked.answer, at)
    if refund_due(change.account) is not None:
        if asked.refund_id is None:
            raise ConcurrentUpdate(f"order {account.order_id}: a refund is due that was not asked")
        change = change.then(refunded(change.account, asked.refund_id, at))
    return change


def view(order_id: str, account: Account | None) -> PaymentView:
    """The payment of an order: pending until the provider answers; none for an order never charged."""
    if account is None or account.order is None:
        raise NotFound(f"payments knows no order {order_id}")
    if account.payment is None and account.cancelled:
        raise NotFound(f"order {order_id} was cancelled before any payment was taken")
    order, payment = account.order, account.payment or Payment(Status.PENDING, attempts=0)
    return PaymentView(
        payment_id=payment_id(order_id),
        order_id=order_id,
        customer_id=order.customer_id,
        status=payment.status,
        amount_cents=order.total_cents,
        currency=order.currency,
        provider_reference=payment.provider_reference,
        failure=payment.failure,
        attempts=payment.attempts,
        updated_at=account.updated_at,
    )
