from datetime import UTC, datetime, timedelta
from itertools import permutations

import pytest

from actors.analytics import domain
from actors.analytics.domain import Line, OrderFacts
from brokers.contracts.analytics import Percentiles, TopProduct
from brokers.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderShipped,
)
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from brokers.contracts.shipping import ShipmentDelivered
from tests.orders_examples import order_confirmed, order_placed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LINES = [
    OrderLine(sku="A", quantity=2, unit_price_cents=1_000),
    OrderLine(sku="B", quantity=1, unit_price_cents=500),
]
PLACED = order_placed("o1", "c1", LINES)
CONFIRMED = order_confirmed(PLACED)
SHIPPED = OrderShipped(order_id="o1", customer_id="c1", shipment_id="s1", carrier="x", tracking_number="t")
DELIVERED = OrderDelivered(order_id="o1", customer_id="c1")
CANCELLED = OrderCancelled(order_id="o1", customer_id="c1", reason="customer")
CAPTURED = PaymentCaptured(
    payment_id="p1",
    order_id="o1",
    customer_id="c1",
    amount_cents=2_500,
    currency="EUR",
    provider_reference="r",
)
REFUNDED = PaymentRefunded(
    payment_id="p1", order_id="o1", customer_id="c1", amount_cents=2_500, currency="EUR"
)
DECLINED = PaymentFailed(order_id="o1", customer_id="c1", reason="declined")


def follow(*timed: tuple[object, datetime]) -> OrderFacts:
    facts = OrderFacts("o1")
    for event, at in timed:
        facts = domain.observe(event, facts, at)
    return facts


def total(*orders: OrderFacts) -> dict:
    """The counters of some orders, built the way the store builds them: by differences."""
    counters: dict = {}
    for order in orders:
        for key, change in domain.difference(OrderFacts(order.order_id), order).items():
            counters[key] = counters.get(key, 0) + change
    return {key: n for key, n in counters.items() if n}


def test_an_order_is_counted_in_the_furthest_status_its_events_reached():
    assert follow((PLACED, T0)).status == "placed"
    assert follow((PLACED, T0), (CONFIRMED, T0), (SHIPPED, T0), (DELIVERED, T0)).status == "delivered"
    assert follow((DELIVERED, T0), (SHIPPED, T0), (CONFIRMED, T0), (PLACED, T0)).status == "delivered"
    assert follow((CONFIRMED, T0), (CANCELLED, T0), (PLACED, T0)).status == "cancelled"


def test_every_arrival_order_ends_in_the_same_facts():
    timed = [
        (PLACED, T0),
        (CAPTURED, T0),
        (CONFIRMED, T0 + timedelta(seconds=3)),
        (CANCELLED, T0),
        (REFUNDED, T0),
    ]
    assert len({follow(*order) for order in permutations(timed)}) == 1


def test_an_earlier_time_learnt_late_moves_the_saga_duration_to_its_bucket():
    late = follow((PLACED, T0 + timedelta(seconds=2)), (CONFIRMED, T0 + timedelta(seconds=3)))
    early = domain.observe(PLACED, late, T0)
    assert domain.difference(late, early) == {("saga_ms", "1000"): -1, ("saga_ms", "3000"): 1}


def test_a_copy_of_an_event_changes_nothing_and_the_earliest_time_is_kept():
    once = follow((PLACED, T0), (CONFIRMED, T0 + timedelta(seconds=2)))
    again = follow(
        (PLACED, T0),
        (CONFIRMED, T0 + timedelta(seconds=2)),
        (PLACED, T0 + timedelta(seconds=9)),
        (CONFIRMED, T0 + timedelta(seconds=5)),
    )
    assert once == again and once.saga_seconds == 2.0
    assert domain.observe(CONFIRMED, once, T0 + timedelta(seconds=7)) == once


def test_saga_seconds_need_both_times_and_are_never_negative():
    assert follow((PLACED, T0)).saga_seconds is None
    assert follow((CONFIRMED, T0)).saga_seconds is None
    assert follow((PLACED, T0 + timedelta(seconds=1)), (CONFIRMED, T0)).saga_seconds == 0.0


def test_a_confirmed_order_contributes_its_status_sale_lines_and_money():
    facts = follow((PLACED, T0), (CAPTURED, T0), (CONFIRMED, T0))
    assert total(facts) == {
        ("money", "captured_cents"): 2_500,
        ("sales", "orders"): 1,
        ("sales", "total_cents"): 2_500,
        ("status", "confirmed"): 1,
        ("saga_ms", "0"): 1,
        ("units", "A"): 2,
        ("units", "B"): 1,
        ("revenue", "A"): 2_000,
        ("revenue", "B"): 500,
    }


def test_a_cancellation_after_confirmation_takes_the_sale_back():
    confirmed = follow((PLACED, T0), (CAPTURED, T0), (CONFIRMED, T0))
    cancelled = domain.observe(REFUNDED, domain.observe(CANCELLED, confirmed, T0), T0)
    assert domain.difference(confirmed, cancelled) == {
        ("money", "refunded_cents"): 2_500,
        ("reason", "customer"): 1,
        ("revenue", "A"): -2_000,
        ("revenue", "B"): -500,
        ("sales", "orders"): -1,
        ("sales", "total_cents"): -2_500,
        ("status", "cancelled"): 1,
        ("status", "confirmed"): -1,
        ("units", "A"): -2,
        ("units", "B"): -1,
    }


def test_a_sale_counts_once_its_lines_are_known_whatever_came_first():
    shipped_first = follow((SHIPPED, T0))
    assert ("sales", "orders") not in total(shipped_first)
    assert total(domain.observe(PLACED, shipped_first, T0))[("sales", "orders")] == 1


def test_a_declined_payment_and_its_cancellation_are_counted_by_reason():
    facts = follow(
        (PLACED, T0), (DECLINED, T0), (CANCELLED.model_copy(update={"reason": "payment_declined"}), T0)
    )
    assert total(facts) == {
        ("failure", "declined"): 1,
        ("reason", "payment_declined"): 1,
        ("status", "cancelled"): 1,
    }


def test_events_analytics_does_not_follow_are_refused():
    with pytest.raises(TypeError, match="shipment.delivered"):
        domain.observe(ShipmentDelivered(shipment_id="s1", order_id="o1"), OrderFacts("o1"), T0)


@pytest.mark.parametrize(
    ("total_cents", "count", "mean"), [(6_500, 3, 2_167), (5, 2, 3), (4, 3, 1), (0, 0, None)]
)
def test_the_average_is_in_whole_cents_halves_up(total_cents, count, mean):
    assert domain.average(total_cents, count) == mean


@pytest.mark.parametrize(
    ("percentile", "count", "index"),
    [
        (50, 1, 0),
        (99, 1, 0),
        (50, 4, 1),
        (90, 4, 3),
        (99, 4, 3),
        (50, 10, 4),
        (90, 10, 8),
        (99, 100, 98),
        (99, 101, 99),
    ],
)
def test_percentiles_are_nearest_rank(percentile, count, index):
    assert domain.rank_index(percentile, count) == index


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, 0),
        (0.0004, 0),
        (0.0126, 13),
        (0.999, 999),
        (1.0, 1_000),
        (1.2345, 1_230),
        (1.235, 1_240),
        (12.3449, 12_300),
        (99.96, 100_000),
        (3_600.0, 3_600_000),
    ],
)
def test_saga_durations_are_counted_to_three_significant_digits_of_a_millisecond(seconds, bucket):
    assert domain.saga_bucket_ms(seconds) == bucket


def test_percentiles_are_read_from_the_buckets_by_nearest_rank():
    assert domain.percentiles({}) == domain.percentiles({"1000": 0}) == Percentiles(count=0)
    assert domain.percentiles({"10000": 1, "1000": 1, "2000": 1, "4000": 1}) == Percentiles(
        count=4, p50_s=2.0, p90_s=10.0, p99_s=10.0
    )
    hundred = {"100": 50, "200": 40, "300": 9, "900": 1}
    assert domain.percentiles(hundred) == Percentiles(count=100, p50_s=0.1, p90_s=0.2, p99_s=0.3)


def test_top_products_rank_by_units_then_revenue_then_sku_and_leave_out_what_is_not_sold():
    units = {"A": 3, "B": 1, "C": 1, "D": 0, "E": 3}
    revenue = {"A": 3_000, "B": 500, "C": 3_000, "D": 0, "E": 3_000}
    assert domain.top_products(units, revenue, 10) == [
        TopProduct(sku="A", units=3, revenue_cents=3_000),
        TopProduct(sku="E", units=3, revenue_cents=3_000),
        TopProduct(sku="C", units=1, revenue_cents=3_000),
        TopProduct(sku="B", units=1, revenue_cents=500),
    ]
    assert [p.sku for p in domain.top_products(units, revenue, 2)] == ["A", "E"]


def test_stats_show_every_status_and_reason_and_revenue_net_of_refunds():
    counters = {
        "status": {"placed": 1, "cancelled": 2, "confirmed": 0},
        "reason": {"timeout": 2},
        "money": {"captured_cents": 9_000, "refunded_cents": 1_500},
        "sales": {"orders": 2, "total_cents": 7_501},
        "failure": {"unavailable": 1},
        "units": {"A": 3},
        "revenue": {"A": 3_000},
        "saga_ms": {"1500": 2},
    }
    stats = domain.stats(counters, as_of=T0, top=5)
    assert stats.orders_by_status == {
        "placed": 1,
        "confirmed": 0,
        "shipped": 0,
        "delivered": 0,
        "cancelled": 2,
    }
    assert stats.cancellations_by_reason == {
        "out_of_stock": 0,
        "payment_declined": 0,
        "payment_unavailable": 0,
        "timeout": 2,
        "customer": 0,
    }
    assert (stats.revenue_cents, stats.refunded_cents, stats.average_order_value_cents) == (
        7_500,
        1_500,
        3_751,
    )
    assert stats.payment_failures_by_reason == {"declined": 0, "unavailable": 1}
    assert stats.top_products == [TopProduct(sku="A", units=3, revenue_cents=3_000)] and stats.as_of == T0
    assert stats.saga_seconds == Percentiles(count=2, p50_s=1.5, p90_s=1.5, p99_s=1.5)


def test_stats_before_any_event():
    stats = domain.stats({}, as_of=None, top=10)
    assert set(stats.orders_by_status.values()) == {0} and stats.average_order_value_cents is None
    assert (stats.revenue_cents, stats.refunded_cents, stats.top_products) == (0, 0, [])
    assert stats.saga_seconds == Percentiles(count=0)


def test_lines_of_the_same_sku_add_up():
    doubled = PLACED.model_copy(
        update={"lines": [*LINES, OrderLine(sku="A", quantity=1, unit_price_cents=900)]}
    )
    facts = follow((doubled, T0), (CONFIRMED, T0))
    assert facts.lines == (Line("A", 2, 1_000), Line("B", 1, 500), Line("A", 1, 900))
    assert (total(facts)[("units", "A")], total(facts)[("revenue", "A")]) == (3, 2_900)
