"""Order rules: an order is the fold of its events; decisions turn what happened into new events.

Pure: no I/O. A decision looks at the order as its stream says it is now and returns the events to
append (often none) or raises ``RuleViolation``. Because every decision starts from the fold, the
same fact arriving twice under two message ids decides nothing the second time, and a fact arriving
after the order was cancelled never revives it.

The state machine::

    placed -> reserved -> confirmed -> shipped -> delivered
      |          |            |           ^
      |          |            v           | (the parcel had left)
      |          |        cancelling -----+
      |          |            |
      +----------+------------+--> cancelled (out_of_stock, payment_declined, payment_unavailable,
                                              timeout, customer)

A confirmed order is no longer orders' alone to cancel: shipping may be dispatching it. The
customer's cancel then only asks (cancelling); shipping answers by stopping the shipment
(cancelled) or by the dispatch it already made (shipped). So an order is never both shipped and
cancelled, and inventory never sees a dispatch after it released the stock.

Messages may arrive out of their saga order when one of them waits in a retry; each decision below
says how it deals with that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import reduce

from actors.orders.events import (
    CancellationRequested,
    Cancelled,
    Confirmed,
    Delivered,
    OrderEvent,
    Placed,
    Recorded,
    Reserved,
    Shipped,
)
from actors.runtime.errors import CorruptData, RuleViolation, Transient
from brokers import pricing
from brokers.contracts.common import Line
from brokers.contracts.orders import (
    CancelReason,
    OrderCancellationRequested,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    OrderQuote,
    OrderShipped,
    OrderStatus,
    OrderStep,
    OrderView,
    PlaceOrder,
)
from brokers.contracts.payments import FailureReason, PaymentCaptured
from brokers.contracts.shipping import ShipmentDelivered, ShipmentDispatched
from brokers.envelope import Event
from brokers.pricing import Price

STAGES: tuple[OrderStatus, ...] = ("placed", "reserved", "confirmed", "cancelling", "shipped", "delivered")
PAYMENT_FAILURES: dict[FailureReason, CancelReason] = {
    "declined": "payment_declined",
    "unavailable": "payment_unavailable",
}

Decision = tuple[OrderEvent, ...]
NOTHING: Decision = ()


class NotYet(Transient):
    """A fact arrived before the one it follows, which is still waiting in a retry. Transient: the
    runtime retries this one too, by when the other has been applied."""


class CorruptStream(CorruptData):
    """A stream that no sequence of decisions can produce (a bug or a hand edit): not folded."""


# --- the aggregate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    total_cents: int
    currency: str
    cancel_reason: CancelReason | None
    request_digest: str
    placed_at: datetime
    updated_at: datetime
    history: tuple[OrderStep, ...]
    version: int

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def reached(self, stage: OrderStatus) -> bool:
        """Whether the order got to ``stage`` (or beyond) without being cancelled."""
        return not self.cancelled and STAGES.index(self.status) >= STAGES.index(stage)

    def view(self) -> OrderView:
        return OrderView(**self.__dict__)


def evolve(order: Order | None, recorded: Recorded) -> Order:
    """The order after one more event of its stream."""
    event, at = recorded.event, recorded.at
    if order is None and isinstance(event, Placed) and recorded.version == 1:
        return Order(
            order_id=recorded.order_id,
            customer_id=event.customer_id,
            status="placed",
            lines=event.lines,
            total_cents=event.total_cents,
            currency=event.currency,
            cancel_reason=None,
            request_digest=event.request_digest,
            placed_at=at,
            updated_at=at,
            history=(OrderStep(status="placed", at=at),),
            version=recorded.version,
        )
    # Only a placement starts a stream, and each later event is the next version: else it is corrupt.
    if order is None or isinstance(event, Placed) or recorded.version != order.version + 1:
        raise CorruptStream(
            f"order {recorded.order_id}: {event.STATUS} at version {recorded.version} cannot follow "
            f"{'nothing' if order is None else f'{order.status} at version {order.version}'}"
        )
    reason = event.reason if isinstance(event, Cancelled) else None
    return replace(
        order,
        status=event.STATUS,
        cancel_reason=reason,
        updated_at=at,
        history=(*order.history, OrderStep(status=event.STATUS, at=at, reason=reason)),
        version=recorded.version,
    )


def fold(stream: Iterable[Recorded]) -> Order | None:
    """The order a stream describes (None for an empty stream)."""
    return reduce(evolve, stream, None)


def record(
    order: Order | None, order_id: str, events: Sequence[OrderEvent], at: datetime
) -> tuple[list[Recorded], Order]:
    """The new events (at least one) numbered after the order's last one, and the order they make."""
    start = 0 if order is None else order.version
    recorded = [Recorded(order_id, start + n, at, event) for n, event in enumerate(events, start=1)]
    # The first event on its own: from it on there is an order, whatever ``order`` was.
    return recorded, reduce(evolve, recorded[1:], evolve(order, recorded[0]))


# --- decisions -----------------------------------------------------------------------------------


def place(existing: Order | None, command: PlaceOrder, prices: Mapping[str, Price]) -> Decision:
    """PlaceOrder: price every line from the catalog replica and start the stream.

    The same request again (same digest, a redelivery or a client retry under a new message id)
    changes nothing, and so does another request under a used order id (the key's first write
    stands, never a dead letter for what a customer sent).
    A SKU the replica does not know is refused rather than retried, and the dead letter names it:
    it is a bad request (the edge is expected to check SKUs against the catalog first). The one
    valid order this refuses is one sent before the product's product.created reached orders.
    """
    if existing is not None:
        # Another request under a used order id too: the first stands. The edge refuses such a
        # request (409); only two edge replicas placing one key at the same moment let one through.
        return NOTHING
    quote = priced(command.lines, prices)
    return (
        Placed(
            customer_id=command.customer_id,
            lines=tuple(quote.lines),
            total_cents=quote.total_cents,
            currency=quote.currency,
            request_digest=command.request_digest,
        ),
    )


def priced(lines: Sequence[Line], prices: Mapping[str, Price]) -> OrderQuote:
    """The lines at today's prices, or RuleViolation saying why they cannot make an order.

    The edge checks the same rule (brokers.pricing) before it accepts an order, so a customer hears
    these refusals as a 422 rather than the order ending in a dead letter.
    """
    try:
        return pricing.priced(lines, prices)
    except pricing.NotPriceable as exc:
        raise RuleViolation(str(exc)) from exc


def reserve(order: Order) -> Decision:
    """stock.reserved: placed -> reserved.

    Reserved or further already: a duplicate, nothing. Cancelled (customer or deadline before the
    reservation was recorded): nothing; inventory releases the reservation on order.cancelled.
    """
    return (Reserved(),) if order.status == "placed" else NOTHING


def reject_stock(order: Order) -> Decision:
    """stock.rejected: placed -> cancelled (out_of_stock).

    Cancelled already: nothing. Reserved or further: inventory answers once per order, so a
    rejection now contradicts its reservation and is refused.
    """
    if order.cancelled:
        return NOTHING
    if order.status != "placed":
        raise RuleViolation(f"order {order.order_id} is {order.status}: a stock rejection contradicts it")
    return (Cancelled(reason="out_of_stock"),)


def confirm(order: Order, capture: PaymentCaptured) -> Decision:
    """payment.captured: reserved -> confirmed, announced as order.confirmed.

    Placed: payments charges only on stock.reserved, so the capture proves a reservation whose
    event is still in a retry; both are recorded (that stock.reserved then changes nothing).
    Confirmed or further: a duplicate, nothing.
    Cancelled (timeout, customer, ...): nothing, the order stays cancelled. Payments refunds that
    capture by itself: it refunds on order.cancelled, and a capture made after it saw order.cancelled.
    A capture of another amount than the order's total is refused (the deadline then cancels the
    order and payments refunds).
    """
    if order.cancelled or order.reached("confirmed"):
        return NOTHING
    if (capture.amount_cents, capture.currency) != (order.total_cents, order.currency):
        raise RuleViolation(
            f"order {order.order_id} totals {order.total_cents} {order.currency} but "
            f"{capture.amount_cents} {capture.currency} was captured"
        )
    confirmed = Confirmed(payment_id=capture.payment_id)
    return (Reserved(), confirmed) if order.status == "placed" else (confirmed,)


def fail_payment(order: Order, reason: FailureReason) -> Decision:
    """payment.failed: placed or reserved -> cancelled (payment_declined or payment_unavailable).

    Cancelled already (the deadline came first): nothing. Confirmed or further: payments decides
    once per order, so a failure after its capture contradicts it and is refused.
    """
    if order.cancelled:
        return NOTHING
    if order.reached("confirmed"):
        raise RuleViolation(
            f"order {order.order_id} is {order.status}: a payment failure contradicts its capture"
        )
    return (Cancelled(reason=PAYMENT_FAILURES[reason]),)


def expire(order: Order) -> Decision:
    """ExpireOrder (the deadline set when the order was placed): not yet confirmed -> cancelled
    (timeout). Confirmed or further: it made it in time, nothing. Cancelled already: nothing."""
    if order.cancelled or order.reached("confirmed"):
        return NOTHING
    return (Cancelled(reason="timeout"),)


def cancel_by_customer(order: Order, customer_id: str) -> Decision:
    """CancelOrder: allowed until dispatch.

    Placed or reserved: cancelled (customer). Confirmed: cancelling, and shipping decides (see the
    module's note); payments refunds the capture once the order is cancelled. Cancelling or
    cancelled already: nothing, the first reason stays. Shipped or delivered: too late, nothing
    (the edge answers 409 when it sees that; a cancel racing the dispatch is not the customer's
    fault, so it is no dead letter either).
    Only the order's own customer may cancel it: anyone else is refused (not ignored, so the dead
    letter shows the attempt; the edge never sends one).
    """
    if customer_id != order.customer_id:
        raise RuleViolation(f"order {order.order_id} is not an order of customer {customer_id}")
    if order.cancelled or order.reached("cancelling"):
        return NOTHING
    if order.status == "confirmed":
        return (CancellationRequested(),)
    return (Cancelled(reason="customer"),)


def cancel_stopped(order: Order) -> Decision:
    """shipment.stopped: cancelling -> cancelled (customer).

    Cancelled already: a duplicate, nothing. Any other status: shipping stops a shipment only when
    orders asked it to, so this contradicts the order and is refused.
    """
    if order.cancelled:
        return NOTHING
    if order.status != "cancelling":
        raise RuleViolation(f"order {order.order_id} is {order.status}: nobody asked to stop its shipment")
    return (Cancelled(reason="customer"),)


def ship(order: Order, dispatched: ShipmentDispatched) -> Decision:
    """shipment.dispatched: confirmed or cancelling -> shipped, announced as order.shipped.

    Cancelling: the parcel left before shipping saw the request, which is now void. Shipped or
    delivered: a duplicate, nothing. Placed, reserved or cancelled: shipping dispatches only after
    order.confirmed, and a confirmed order is cancelled only once shipping stopped it, so this
    contradicts the order and is refused.
    """
    if order.reached("shipped"):
        return NOTHING
    if order.status not in ("confirmed", "cancelling"):
        raise RuleViolation(f"order {order.order_id} is {order.status}: it cannot have been dispatched")
    return (
        Shipped(
            shipment_id=dispatched.shipment_id,
            carrier=dispatched.carrier,
            tracking_number=dispatched.tracking_number,
        ),
    )


def deliver(order: Order, delivered: ShipmentDelivered) -> Decision:
    """shipment.delivered: shipped -> delivered, announced as order.delivered.

    Delivered already: nothing. Confirmed or cancelling: the dispatch is still in a retry, so this
    waits for it (NotYet, retried). Placed, reserved or cancelled: refused (see ``ship``).
    """
    if order.status == "delivered":
        return NOTHING
    if order.status in ("confirmed", "cancelling"):
        raise NotYet(f"order {order.order_id} was delivered before its dispatch was recorded")
    if order.status != "shipped":
        raise RuleViolation(f"order {order.order_id} is {order.status}: it cannot have been delivered")
    return (Delivered(shipment_id=delivered.shipment_id),)


# --- what the world is told ----------------------------------------------------------------------


def announcement(order: Order, event: OrderEvent) -> Event | None:
    """The public event for a recorded one (``order`` as it is after it), or None for internal steps."""
    who = {"order_id": order.order_id, "customer_id": order.customer_id}
    content = {"lines": list(order.lines), "total_cents": order.total_cents, "currency": order.currency}
    match event:
        case Placed():
            return OrderPlaced(**who, **content)
        case Confirmed():
            return OrderConfirmed(**who, **content)
        case CancellationRequested():
            return OrderCancellationRequested(**who)
        case Shipped(shipment_id=shipment_id, carrier=carrier, tracking_number=tracking_number):
            return OrderShipped(
                **who, shipment_id=shipment_id, carrier=carrier, tracking_number=tracking_number
            )
        case Delivered():
            return OrderDelivered(**who)
        case Cancelled(reason=reason):
            return OrderCancelled(**who, reason=reason)
    return None
