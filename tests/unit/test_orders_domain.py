from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from actors.orders import domain
from actors.orders.domain import NOTHING, CorruptStream, NotYet, Order
from actors.orders.events import (
    CancellationRequested,
    Cancelled,
    Confirmed,
    Delivered,
    Placed,
    Recorded,
    Reserved,
    Shipped,
    event_of,
)
from actors.runtime.errors import RuleViolation
from brokers.contracts.common import Line
from brokers.contracts.orders import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderShipped,
    OrderStep,
    PlaceOrder,
)
from brokers.contracts.payments import PaymentCaptured
from brokers.contracts.shipping import ShipmentDelivered, ShipmentDispatched
from brokers.pricing import Price, newer
from tests.orders_examples import order_confirmed, order_placed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = {
    "A": Price("A", 250, "EUR", T0),
    "B": Price("B", 1_000, "EUR", T0),
    "U": Price("U", 300, "USD", T0),
}


def place_command(*lines: tuple[str, int], digest: str = "d1", order_id: str = "o1") -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        customer_id="c1",
        lines=[Line(sku=s, quantity=q) for s, q in lines],
        request_digest=digest,
    )


def placing() -> Placed:
    [event] = domain.place(None, place_command(("A", 2), ("B", 1)), PRICES)
    return event


def placed() -> Order:
    return domain.record(None, "o1", [placing()], T0)[1]


def after(order: Order, *events) -> Order:
    return domain.record(order, order.order_id, events, T0 + timedelta(seconds=order.version))[1]


def at(status: str) -> Order:
    """An order of 2 x A + 1 x B (1500 EUR cents) that went the happy way up to ``status``."""
    path = {
        "placed": (),
        "reserved": (Reserved(),),
        "confirmed": (Reserved(), Confirmed(payment_id="pay-1")),
        "cancelling": (Reserved(), Confirmed(payment_id="pay-1"), CancellationRequested()),
        "shipped": (
            Reserved(),
            Confirmed(payment_id="pay-1"),
            Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1"),
        ),
        "delivered": (
            Reserved(),
            Confirmed(payment_id="pay-1"),
            Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1"),
            Delivered(shipment_id="s1"),
        ),
    }[status]
    order = placed()
    return after(order, *path) if path else order


def cancelled(reason: str = "timeout", since: str = "reserved") -> Order:
    return after(at(since), Cancelled(reason=reason))


def capture(amount: int = 1_500, currency: str = "EUR") -> PaymentCaptured:
    return PaymentCaptured(
        payment_id="pay-1",
        order_id="o1",
        customer_id="c1",
        amount_cents=amount,
        currency=currency,
        provider_reference="ref-1",
    )


DISPATCHED = ShipmentDispatched(shipment_id="s1", order_id="o1", carrier="dhl", tracking_number="T1")
DELIVERED = ShipmentDelivered(shipment_id="s1", order_id="o1")
ACTIVE = ("placed", "reserved", "confirmed", "shipped", "delivered")


# --- placing -------------------------------------------------------------------------------------


def test_placing_prices_every_line_from_the_replica_and_totals_them():
    assert placing() == Placed(
        customer_id="c1",
        lines=(
            OrderLine(sku="A", quantity=2, unit_price_cents=250),
            OrderLine(sku="B", quantity=1, unit_price_cents=1_000),
        ),
        total_cents=1_500,
        currency="EUR",
        request_digest="d1",
    )


def test_the_same_request_again_or_another_under_the_same_id_places_nothing():
    order = placed()
    assert domain.place(order, place_command(("A", 2), ("B", 1)), PRICES) == NOTHING
    assert domain.place(order, place_command(("A", 3), digest="d2"), PRICES) == NOTHING


def test_an_unknown_sku_is_refused_naming_it():
    with pytest.raises(RuleViolation, match="unknown SKU.*NOPE"):
        domain.place(None, place_command(("A", 1), ("NOPE", 1)), PRICES)


def test_lines_in_two_currencies_are_refused():
    with pytest.raises(RuleViolation, match="EUR, USD"):
        domain.place(None, place_command(("A", 1), ("U", 1)), PRICES)


def test_a_total_above_the_largest_payable_amount_is_refused():
    dear = {"A": Price("A", 100_000_000_00, "EUR", T0)}
    with pytest.raises(RuleViolation, match="above the largest payable amount"):
        domain.place(None, place_command(("A", 2)), dear)


def test_a_quote_prices_the_lines_as_placing_them_would():
    quote = domain.priced(place_command(("A", 2), ("B", 1)).lines, PRICES)
    (placed_event,) = domain.place(None, place_command(("A", 2), ("B", 1)), PRICES)

    assert (quote.total_cents, quote.currency) == (placed_event.total_cents, placed_event.currency)
    assert tuple(quote.lines) == placed_event.lines


def test_a_place_order_has_one_line_per_sku():
    with pytest.raises(ValidationError, match="one line per SKU"):
        place_command(("A", 1), ("A", 2))


def test_a_newer_price_replaces_an_older_one_and_a_late_older_one_does_not():
    current = Price("A", 250, "EUR", T0)
    assert newer(Price("A", 300, "EUR", T0 + timedelta(seconds=1)), current)
    assert not newer(Price("A", 200, "EUR", T0 - timedelta(seconds=1)), current)
    assert newer(current, None)


# --- the fold ------------------------------------------------------------------------------------


def test_the_fold_of_a_stream_is_the_order_its_decisions_made():
    first, order = domain.record(
        None, "o1", domain.place(None, place_command(("A", 2), ("B", 1)), PRICES), T0
    )
    later = (
        Reserved(),
        Confirmed(payment_id="pay-1"),
        Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1"),
        Delivered(shipment_id="s1"),
    )
    rest, order = domain.record(order, "o1", later, T0 + timedelta(seconds=1))
    assert [entry.version for entry in (*first, *rest)] == [1, 2, 3, 4, 5]
    assert domain.fold([*first, *rest]) == order
    assert [step.status for step in order.history] == list(ACTIVE)
    assert (order.status, order.version, order.total_cents, order.placed_at) == ("delivered", 5, 1_500, T0)


def test_a_cancelled_order_keeps_its_reason_in_status_view_and_history():
    view = cancelled("out_of_stock", since="placed").view()
    assert (view.status, view.cancel_reason, view.version) == ("cancelled", "out_of_stock", 2)
    assert view.history[-1] == OrderStep(
        status="cancelled", at=T0 + timedelta(seconds=1), reason="out_of_stock"
    )


def test_a_stream_that_decisions_cannot_produce_is_not_folded():
    first = Recorded("o1", 1, T0, Reserved())
    with pytest.raises(CorruptStream, match="reserved at version 1 cannot follow nothing"):
        domain.fold([first])
    order = placed()
    with pytest.raises(CorruptStream, match="version 3"):
        domain.evolve(order, Recorded("o1", 3, T0, Reserved()))


def test_stored_events_come_back_as_they_were():
    event = Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1")
    assert event_of("shipped", event.model_dump(mode="json")) == event
    assert event_of("placed", placing().model_dump(mode="json")) == placing()


# --- the saga ------------------------------------------------------------------------------------


def test_stock_reserved_moves_a_placed_order_on_once():
    assert domain.reserve(at("placed")) == (Reserved(),)
    for status in ("reserved", "confirmed", "shipped", "delivered"):
        assert domain.reserve(at(status)) == NOTHING
    assert domain.reserve(cancelled(since="placed")) == NOTHING


def test_stock_rejected_cancels_a_placed_order_out_of_stock():
    assert domain.reject_stock(at("placed")) == (Cancelled(reason="out_of_stock"),)
    assert domain.reject_stock(cancelled(since="placed")) == NOTHING
    with pytest.raises(RuleViolation, match="contradicts"):
        domain.reject_stock(at("reserved"))


def test_a_capture_confirms_a_reserved_order_once():
    assert domain.confirm(at("reserved"), capture()) == (Confirmed(payment_id="pay-1"),)
    for status in ("confirmed", "shipped", "delivered"):
        assert domain.confirm(at(status), capture()) == NOTHING


def test_a_capture_before_the_reservation_was_recorded_records_both():
    assert domain.confirm(at("placed"), capture()) == (Reserved(), Confirmed(payment_id="pay-1"))
    # ... and the late stock.reserved then changes nothing
    assert domain.reserve(after(at("placed"), Reserved(), Confirmed(payment_id="pay-1"))) == NOTHING


def test_a_capture_never_revives_a_cancelled_order():
    for reason in ("timeout", "customer"):
        assert domain.confirm(cancelled(reason), capture()) == NOTHING


def test_a_capture_of_another_amount_is_refused():
    with pytest.raises(RuleViolation, match="totals 1500 EUR but 1400 EUR was captured"):
        domain.confirm(at("reserved"), capture(amount=1_400))


@pytest.mark.parametrize(
    ("failure", "reason"), [("declined", "payment_declined"), ("unavailable", "payment_unavailable")]
)
def test_a_payment_failure_cancels_with_its_reason(failure, reason):
    assert domain.fail_payment(at("reserved"), failure) == (Cancelled(reason=reason),)
    assert domain.fail_payment(at("placed"), failure) == (Cancelled(reason=reason),)
    assert domain.fail_payment(cancelled("timeout"), failure) == NOTHING


def test_a_payment_failure_after_the_capture_is_refused():
    with pytest.raises(RuleViolation, match="contradicts its capture"):
        domain.fail_payment(at("confirmed"), "declined")


def test_the_deadline_cancels_only_an_order_not_yet_confirmed():
    assert domain.expire(at("placed")) == (Cancelled(reason="timeout"),)
    assert domain.expire(at("reserved")) == (Cancelled(reason="timeout"),)
    for status in ("confirmed", "shipped", "delivered"):
        assert domain.expire(at(status)) == NOTHING
    assert domain.expire(cancelled("customer")) == NOTHING


def test_the_customer_cancels_an_unpaid_order_at_once_and_asks_shipping_for_a_confirmed_one():
    for status in ("placed", "reserved"):
        assert domain.cancel_by_customer(at(status), "c1") == (Cancelled(reason="customer"),)
    assert domain.cancel_by_customer(at("confirmed"), "c1") == (CancellationRequested(),)
    assert domain.announcement(at("cancelling"), CancellationRequested()) == OrderCancellationRequested(
        order_id="o1", customer_id="c1"
    )


def test_a_cancel_asked_again_or_too_late_changes_nothing_and_is_no_dead_letter():
    for status in ("cancelling", "shipped", "delivered"):
        assert domain.cancel_by_customer(at(status), "c1") == NOTHING


def test_the_order_is_cancelled_once_shipping_has_stopped_its_shipment():
    assert domain.cancel_stopped(at("cancelling")) == (Cancelled(reason="customer"),)
    assert domain.cancel_stopped(after(at("cancelling"), Cancelled(reason="customer"))) == NOTHING
    for status in ("confirmed", "shipped"):
        with pytest.raises(RuleViolation, match="nobody asked to stop its shipment"):
            domain.cancel_stopped(at(status))


def test_a_cancelling_order_is_still_paid_for_and_never_times_out():
    order = at("cancelling")
    assert order.reached("confirmed") and not order.reached("shipped")
    assert domain.expire(order) == NOTHING
    assert domain.confirm(order, capture()) == NOTHING


def test_cancelling_again_keeps_the_first_reason_and_another_customer_may_not_cancel():
    assert domain.cancel_by_customer(cancelled("timeout"), "c1") == NOTHING
    with pytest.raises(RuleViolation, match="not an order of customer c2"):
        domain.cancel_by_customer(at("reserved"), "c2")


def test_dispatch_ships_a_confirmed_order_once():
    assert domain.ship(at("confirmed"), DISPATCHED) == (
        Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1"),
    )
    assert domain.ship(at("shipped"), DISPATCHED) == NOTHING
    assert domain.ship(at("delivered"), DISPATCHED) == NOTHING
    for order in (at("reserved"), cancelled("customer")):
        with pytest.raises(RuleViolation, match="cannot have been dispatched"):
            domain.ship(order, DISPATCHED)


def test_a_dispatch_before_shipping_saw_the_cancel_request_ships_the_order():
    assert domain.ship(at("cancelling"), DISPATCHED) == (
        Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1"),
    )


def test_delivery_follows_the_dispatch_and_waits_for_a_late_one():
    assert domain.deliver(at("shipped"), DELIVERED) == (Delivered(shipment_id="s1"),)
    assert domain.deliver(at("delivered"), DELIVERED) == NOTHING
    for status in ("confirmed", "cancelling"):
        with pytest.raises(NotYet):
            domain.deliver(at(status), DELIVERED)
    with pytest.raises(RuleViolation, match="cannot have been delivered"):
        domain.deliver(cancelled("customer"), DELIVERED)
    with pytest.raises(RuleViolation, match="cannot have been delivered"):
        domain.deliver(at("placed"), DELIVERED)


# --- what is announced ---------------------------------------------------------------------------


def test_each_step_but_the_reservation_is_announced_with_the_order_it_concerns():
    order = at("delivered")
    lines = list(order.lines)
    who = {"order_id": "o1", "customer_id": "c1"}
    assert domain.announcement(order, placing()) == order_placed("o1", "c1", lines)
    assert domain.announcement(order, Reserved()) is None
    assert domain.announcement(order, Confirmed(payment_id="pay-1")) == order_confirmed(
        order_placed("o1", "c1", lines)
    )
    assert domain.announcement(
        order, Shipped(shipment_id="s1", carrier="dhl", tracking_number="T1")
    ) == OrderShipped(**who, shipment_id="s1", carrier="dhl", tracking_number="T1")
    assert domain.announcement(order, Delivered(shipment_id="s1")) == OrderDelivered(**who)
    assert domain.announcement(order, Cancelled(reason="timeout")) == OrderCancelled(**who, reason="timeout")
