"""The chaos run's books: each row counts what is new since the scenarios before it, in its column."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from brokers.contracts.orders import OrderView
from ops.chaos import Books
from ops.invariants import CAPTURED_TWICE, NO_DEAD_LETTER, STOCK_RULES, Report, Violation

T = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def order(order_id: str, *statuses: str, reason: str | None = None) -> OrderView:
    return OrderView.model_validate(
        {
            "order_id": order_id,
            "customer_id": "c1",
            "status": statuses[-1],
            "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}],
            "total_cents": 100,
            "currency": "EUR",
            "cancel_reason": reason,
            "request_digest": "d" * 64,
            "placed_at": T,
            "updated_at": T,
            "history": [{"status": status, "at": T} for status in statuses],
            "version": len(statuses),
        }
    )


def report(*violations: Violation) -> Report:
    return Report(drained=True, violations=list(violations))


def test_a_clean_scenario_books_every_accepted_order_and_its_confirmations():
    views = {
        "o1": order("o1", "placed", "confirmed", "shipped", "delivered"),
        "o2": order("o2", "placed", "cancelled"),
    }

    row = Books().book("baseline", ["o1", "o2"], views, report(), {"orders.dlq": 0}, Counter())

    assert row.clean
    assert (row.accepted, row.lost, row.confirmed, row.confirmed_pct) == (2, 0, 1, 50.0)


def test_an_order_unknown_or_not_ended_is_lost_and_a_timeout_is_counted():
    views = {
        "o1": None,
        "o2": order("o2", "placed", "reserved"),
        "o3": order("o3", "placed", "cancelled", reason="timeout"),
    }

    row = Books().book("s", ["o1", "o2", "o3"], views, report(), {}, Counter())

    assert (row.lost, row.timed_out, row.clean) == (2, 1, False)


def test_an_order_shipped_and_cancelled_is_counted_once_whoever_saw_it():
    both = order("o1", "placed", "confirmed", "shipped", "cancelled")
    seen = report(Violation("no order is both shipped and cancelled", "o1", "shipped, then cancelled"))

    assert Books().book("s", ["o1"], {"o1": both}, seen, {}, Counter()).shipped_after_cancel == 1


def test_the_checkers_findings_go_to_their_columns_and_the_rest_to_other_violations():
    found = report(
        Violation(CAPTURED_TWICE, "o1", "2 captures"),
        Violation(STOCK_RULES[1], "SKU-1", "on hand 1 + ..."),
        Violation(NO_DEAD_LETTER, "orders.dlq", "1 dead letter"),
        Violation("refunds never exceed captures (provider's ledger)", "o2", "refunded 200 of 100"),
    )

    row = Books().book("s", [], {}, found, {"orders.dlq": 1}, Counter())

    assert (row.double_charged, row.oversold, row.dead_letters) == (1, 1, 1)
    assert row.violations == ("refunds never exceed captures (provider's ledger): o2: refunded 200 of 100",)


def test_a_later_scenario_counts_only_what_earlier_ones_did_not_report():
    books = Books()
    stale = Violation(CAPTURED_TWICE, "o1", "2 captures")
    books.book("first", [], {}, report(stale), {"orders.dlq": 2}, Counter())

    later = books.book(
        "second", [], {}, report(stale, Violation(CAPTURED_TWICE, "o9", "2")), {"orders.dlq": 3}, Counter()
    )

    assert (later.double_charged, later.dead_letters) == (1, 1)


def test_an_unclean_order_is_told_step_by_step_in_the_row():
    views = {
        "o1": order("o1", "placed", "cancelled", reason="timeout"),
        "o2": None,
        "o3": order("o3", "placed", "cancelled"),
    }

    row = Books().book("s", ["o1", "o2", "o3"], views, report(), {}, Counter())

    assert row.unclean_orders == (
        "o1: cancelled; placed 12:00:00.000, cancelled 12:00:00.000",
        "o2: unknown to orders",
    )


def test_a_row_says_how_its_orders_ended():
    views = {
        "o1": order("o1", "placed", "delivered"),
        "o2": order("o2", "placed", "cancelled", reason="out_of_stock"),
        "o3": order("o3", "placed", "cancelled", reason="out_of_stock"),
    }

    row = Books().book("s", list(views), views, report(), {}, Counter())

    assert row.outcomes == (("cancelled: out_of_stock", 2), ("delivered", 1))
