"""An order's timeline from its sources' answers: sections, what is missing, whose it is, its steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brokers.contracts.notifications import NotificationPage, NotificationView
from brokers.contracts.orders import OrderLine, OrderStep, OrderView
from brokers.contracts.payments import PaymentView
from brokers.contracts.shipping import ShipmentStep, ShipmentView
from brokers.rpc import BrokerUnavailable, Problem, QueryFailed, QueryTimeout
from edge.problems import OrderNotFound
from edge.timeline import Answer, answer_of, assemble

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def order(customer_id: str = "ann") -> OrderView:
    return OrderView(
        order_id="o-1", customer_id=customer_id, status="shipped",
        lines=[OrderLine(sku="MUG-1", quantity=1, unit_price_cents=500)], total_cents=500, currency="EUR",
        request_digest="d", placed_at=at(0), updated_at=at(40), version=4,
        history=[OrderStep(status="placed", at=at(0)), OrderStep(status="reserved", at=at(1)),
                 OrderStep(status="confirmed", at=at(3)), OrderStep(status="shipped", at=at(40))],
    )  # fmt: skip


def payment(customer_id: str = "ann") -> PaymentView:
    return PaymentView(
        payment_id="p-1", order_id="o-1", customer_id=customer_id, status="captured", amount_cents=500,
        currency="EUR", provider_reference="ch_1", attempts=1, updated_at=at(2),
    )  # fmt: skip


def shipment() -> ShipmentView:
    return ShipmentView(
        shipment_id="s-1", order_id="o-1", customer_id="ann", status="dispatched", carrier="sim",
        tracking_number="TN-1",
        history=[ShipmentStep(status="scheduled", at=at(4)), ShipmentStep(status="dispatched", at=at(39))],
    )  # fmt: skip


def notifications() -> NotificationPage:
    sent = NotificationView(
        notification_id="n-1", customer_id="ann", order_id="o-1", channel="log", template="order_confirmed",
        subject="Confirmed", body="...", sent_at=at(5),
    )  # fmt: skip
    return NotificationPage(items=[sent], total=1)


TIMEOUT = QueryTimeout("no reply to payments.get_payment within 1s")
UNAVAILABLE = BrokerUnavailable("no actor answers shipping.get_shipment")
FAILED = QueryFailed(Problem.of(503, "notifications could not answer"))


def test_a_timeline_of_every_source_is_complete_with_its_steps_in_time_order() -> None:
    timeline = assemble(
        "o-1", "ann", Answer(order()), Answer(payment()), Answer(shipment()), Answer(notifications())
    )

    assert (timeline.partial, timeline.missing) == (False, [])
    assert timeline.order == order() and timeline.payment == payment() and timeline.shipment == shipment()
    assert timeline.notifications == notifications().items
    assert [(s.source, s.what) for s in timeline.steps] == [
        ("orders", "order placed"),
        ("orders", "order reserved"),
        ("payments", "payment captured"),
        ("orders", "order confirmed"),
        ("shipping", "shipment scheduled"),
        ("notifications", "order_confirmed sent by log"),
        ("shipping", "shipment dispatched"),
        ("orders", "order shipped"),
    ]


def test_sources_that_do_not_know_the_order_yet_leave_their_sections_empty_but_are_not_missing() -> None:
    empty = NotificationPage(items=[], total=0)

    timeline = assemble("o-1", "ann", Answer(order()), Answer(), Answer(), Answer(empty))

    assert (timeline.partial, timeline.missing) == (False, [])
    assert (timeline.payment, timeline.shipment, timeline.notifications) == (None, None, [])


def test_silent_sources_are_listed_as_missing_and_make_it_partial() -> None:
    timeline = assemble(
        "o-1",
        "ann",
        Answer(order()),
        Answer(failure=TIMEOUT),
        Answer(failure=UNAVAILABLE),
        Answer(failure=FAILED),
    )

    assert timeline.partial
    assert [(m.source, m.reason, m.detail) for m in timeline.missing] == [
        ("payments", "timeout", str(TIMEOUT)),
        ("shipping", "unavailable", str(UNAVAILABLE)),
        ("notifications", "failed", str(FAILED)),
    ]
    assert (timeline.payment, timeline.shipment, timeline.notifications) == (None, None, None)
    assert timeline.order == order()


def test_without_orders_another_source_shows_whose_order_it_is() -> None:
    timeline = assemble(
        "o-1", "ann", Answer(failure=TIMEOUT), Answer(payment()), Answer(), Answer(failure=TIMEOUT)
    )

    assert timeline.partial and timeline.order is None
    assert [m.source for m in timeline.missing] == ["orders", "notifications"]
    assert [s.what for s in timeline.steps] == ["payment captured"]


def test_without_orders_and_nothing_else_showing_whose_it_is_orders_failure_is_the_answer() -> None:
    with pytest.raises(QueryTimeout):
        assemble(
            "o-1",
            "ann",
            Answer(failure=TIMEOUT),
            Answer(),
            Answer(failure=UNAVAILABLE),
            Answer(NotificationPage(items=[], total=0)),
        )


@pytest.mark.parametrize(
    "answers",
    [
        (Answer(), Answer(), Answer(), Answer(NotificationPage(items=[], total=0))),  # orders: no such order
        (Answer(order("bob")), Answer(), Answer(), Answer()),
        (Answer(failure=TIMEOUT), Answer(payment("bob")), Answer(), Answer()),
        (Answer(order()), Answer(payment("bob")), Answer(), Answer()),  # sources disagree: refuse
    ],
)
def test_an_order_that_is_not_the_callers_is_not_found(answers: tuple[Answer, ...]) -> None:
    with pytest.raises(OrderNotFound):
        assemble("o-1", "ann", *answers)


async def _answer(value: object) -> object:
    if isinstance(value, Exception):
        raise value
    return value


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (payment(), Answer(payment())),
        (QueryFailed(Problem.of(404, "payments knows no order o-1")), Answer()),
        (TIMEOUT, Answer(failure=TIMEOUT)),
        (UNAVAILABLE, Answer(failure=UNAVAILABLE)),
        (FAILED, Answer(failure=FAILED)),
    ],
)
async def test_an_answer_is_data_nothing_yet_or_why_there_is_none(outcome: object, expected: Answer) -> None:
    assert await answer_of(_answer(outcome)) == expected


async def test_an_unexpected_error_is_not_taken_for_a_silent_source() -> None:
    with pytest.raises(KeyError):
        await answer_of(_answer(KeyError("a bug")))
