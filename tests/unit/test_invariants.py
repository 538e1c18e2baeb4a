from datetime import UTC, datetime, timedelta

from brokers.contracts.inventory import StockView
from brokers.contracts.notifications import NotificationPage, NotificationView
from brokers.contracts.orders import OrderLine, OrderStep, OrderView
from brokers.contracts.payments import PaymentView
from brokers.contracts.shipping import ShipmentStep, ShipmentView
from ops.invariants import OrderFacts, check_orders, check_stock

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)


def order(status: str, *, order_id: str = "o1", placed_at: datetime = NOW, quantity: int = 2) -> OrderView:
    return OrderView(
        order_id=order_id, customer_id="c1", status=status,
        lines=[OrderLine(sku="MUG", quantity=quantity, unit_price_cents=500)], total_cents=500 * quantity,
        currency="EUR", request_digest="d", placed_at=placed_at, updated_at=placed_at,
        history=[OrderStep(status="placed", at=placed_at)], version=1,
        cancel_reason="customer" if status == "cancelled" else None,
    )


def payment(status: str, amount: int = 1000) -> PaymentView:
    return PaymentView(
        payment_id="p1", order_id="o1", customer_id="c1", status=status, amount_cents=amount, currency="EUR",
        attempts=1, updated_at=NOW,
    )


def shipment() -> ShipmentView:
    return ShipmentView(
        shipment_id="s1", order_id="o1", customer_id="c1", status="dispatched", carrier="dhl",
        tracking_number="T1", history=[ShipmentStep(status="scheduled", at=NOW)],
    )


def notes(*templates: str) -> NotificationPage:
    items = [
        NotificationView(
            notification_id=f"n{i}", customer_id="c1", order_id="o1", channel="log", template=t, subject="s",
            body="b", sent_at=NOW,
        )
        for i, t in enumerate(templates)
    ]
    return NotificationPage(items=items, total=len(items))


def facts(view: OrderView, pay: PaymentView | None = None, ship: ShipmentView | None = None, *templates: str):
    return OrderFacts(view, pay, ship, notes(*templates))


def rules(found) -> set[str]:
    return {v.invariant for v in found}


def test_a_clean_history_has_no_violations():
    found = check_orders(
        [facts(order("delivered"), payment("captured"), shipment(), "order.confirmed", "order.shipped")],
        settle_by=LONG_AGO,
    )
    assert found == []


def test_an_order_stuck_past_its_deadline_is_reported():
    stuck = facts(order("reserved", placed_at=LONG_AGO - timedelta(minutes=1)))
    fresh = facts(order("reserved", order_id="o2"))
    found = check_orders([stuck, fresh], settle_by=LONG_AGO)
    assert [(v.invariant, v.subject) for v in found] == [("every order settles", "order o1")]


def test_payment_rules():
    assert rules(check_orders([facts(order("confirmed"))], settle_by=LONG_AGO)) == {"a paid order has one capture"}
    assert rules(check_orders([facts(order("confirmed"), payment("captured", 999))], settle_by=LONG_AGO)) == {
        "a paid order has one capture"
    }
    assert rules(check_orders([facts(order("cancelled"), payment("captured"))], settle_by=LONG_AGO)) == {
        "every capture of a cancelled order is refunded"
    }
    assert check_orders([facts(order("cancelled"), payment("refunded"))], settle_by=LONG_AGO) == []


def test_a_notification_sent_twice_is_reported():
    found = check_orders([facts(order("cancelled"), None, None, "order.cancelled", "order.cancelled")], settle_by=LONG_AGO)
    assert rules(found) == {"each notification is sent once"}


def test_stock_must_balance_and_agree_with_the_orders():
    level = StockView(sku="MUG", on_hand=8, reserved=2, shipped=0, received=10)
    assert check_stock([level], [facts(order("confirmed"), payment("captured"))]) == []
    unbalanced = StockView(sku="MUG", on_hand=9, reserved=2, shipped=0, received=10)
    assert "on hand + reserved + shipped = received" in rules(check_stock([unbalanced], []))
    assert rules(check_stock([level], [facts(order("cancelled"))])) == {"inventory agrees with the orders"}


def test_orders_between_placed_and_reserved_do_not_count_against_inventory():
    level = StockView(sku="MUG", on_hand=8, reserved=2, shipped=0, received=10)
    assert check_stock([level], [facts(order("placed"))]) == []
