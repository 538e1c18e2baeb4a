"""The checker's rules on facts made by hand (tests/integration/test_invariants.py: on real actors)."""

from datetime import UTC, datetime, timedelta

from brokers.contracts.inventory import StockView
from brokers.contracts.notifications import NotificationView
from brokers.contracts.orders import OrderLine, OrderStep, OrderView
from brokers.contracts.payments import PaymentView
from brokers.contracts.shipping import ShipmentStep, ShipmentView
from brokers.dlq import QueueDepth
from ops.invariants import Facts, OrderFacts, When, evaluate, sku_facts
from ops.payment_provider import Charge, Refund

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)
LIVE, DRAINED = When(settle_by=LONG_AGO), When(settle_by=LONG_AGO, drained=True)


def order(status: str, *, placed_at: datetime = NOW, quantity: int = 2, steps=()) -> OrderView:
    history = [OrderStep(status=s, at=placed_at) for s in steps or ("placed", status)]
    return OrderView(
        order_id="o1",
        customer_id="c1",
        status=status,
        lines=[OrderLine(sku="MUG", quantity=quantity, unit_price_cents=500)],
        total_cents=500 * quantity,
        currency="EUR",
        request_digest="d",
        placed_at=placed_at,
        updated_at=placed_at,
        history=history,
        version=1,
        cancel_reason="customer" if status == "cancelled" else None,
    )


def payment(status: str, amount: int = 1000, reference: str | None = "ch1") -> PaymentView:
    return PaymentView(
        payment_id="p1",
        order_id="o1",
        customer_id="c1",
        status=status,
        amount_cents=amount,
        currency="EUR",
        provider_reference=reference if status in ("captured", "refunded") else None,
        attempts=1,
        updated_at=NOW,
    )


def shipment(*statuses: str, cancelled_at: datetime | None = None) -> ShipmentView:
    return ShipmentView(
        shipment_id="s1",
        order_id="o1",
        customer_id="c1",
        status=statuses[-1],
        carrier="dhl",
        tracking_number="T1",
        history=[ShipmentStep(status=s, at=NOW) for s in statuses],
        cancelled_at=cancelled_at,
    )


def capture(charge_id: str = "ch1", amount: int = 1000, refunded: tuple[int, ...] = ()) -> Charge:
    refunds = [
        Refund(refund_id=f"re{i}", idempotency_key=f"r{i}", charge_id=charge_id, amount_cents=cents, at=NOW)
        for i, cents in enumerate(refunded)
    ]
    total = sum(refunded)
    status = "captured" if not total else "refunded" if total == amount else "partially_refunded"
    return Charge(
        charge_id=charge_id,
        idempotency_key="o1",
        status=status,
        amount_cents=amount,
        currency="EUR",
        customer_id="c1",
        refunded_cents=total,
        at=NOW,
        refunds=refunds,
    )


def notes(*templates: str) -> tuple[NotificationView, ...]:
    return tuple(
        NotificationView(
            notification_id=f"n{i}",
            customer_id="c1",
            order_id="o1",
            channel="log",
            template=t,
            subject="s",
            body="b",
            sent_at=NOW,
        )
        for i, t in enumerate(templates)
    )


def one(view=None, pay=None, ship=None, templates=(), charges=()) -> OrderFacts:
    return OrderFacts("o1", view, pay, ship, notes(*templates), tuple(charges))


def found(*orders: OrderFacts, stock=(), dlqs=(), when: When = LIVE) -> set[str]:
    views = [f.order for f in orders if f.order is not None]
    report = evaluate(Facts(list(orders), sku_facts(stock, views), list(dlqs)), when)
    return {v.invariant for v in report.violations}


DELIVERED = order("delivered", steps=("placed", "reserved", "confirmed", "shipped", "delivered"))


def test_a_clean_history_has_no_violations_live_or_drained():
    facts = one(
        DELIVERED,
        payment("captured"),
        shipment("scheduled", "dispatched", "delivered"),
        ("order.confirmed", "order.shipped"),
        [capture()],
    )
    level = StockView(sku="MUG", on_hand=8, reserved=0, shipped=2, received=10)
    assert found(facts, stock=[level], dlqs=[QueueDepth("orders.dlq", 0)], when=DRAINED) == set()
    assert found(facts, stock=[level]) == set()


def test_an_order_stuck_past_its_deadline_is_reported_and_drained_any_unfinished_one():
    stuck = one(order("reserved", placed_at=LONG_AGO - timedelta(minutes=1)))
    fresh = one(order("reserved"))
    report = evaluate(Facts([stuck], [], []), LIVE)
    assert [(v.invariant, v.subject) for v in report.violations] == [("every order settles", "order o1")]
    assert found(fresh) == set()
    assert found(fresh, when=DRAINED) == {"every order settles"}


def test_payment_rules():
    assert found(one(order("confirmed"))) == {"a paid order has one capture"}
    assert "a paid order has one capture" in found(one(order("confirmed"), payment("captured", 999)))
    cancelled_but_captured = one(order("cancelled"), payment("captured"), charges=[capture()])
    assert found(cancelled_but_captured) == set()  # the refund may be on its way
    assert found(cancelled_but_captured, when=DRAINED) == {"every capture of a cancelled order is refunded"}
    refunded = one(order("cancelled"), payment("refunded"), charges=[capture(refunded=(1000,))])
    assert found(refunded, when=DRAINED) == set()


def test_a_notification_sent_twice_is_reported():
    assert found(one(order("cancelled"), templates=("order.cancelled", "order.cancelled"))) == {
        "each notification is sent once"
    }


def test_an_order_shipped_and_cancelled_is_reported_from_its_history_or_its_shipment():
    rule = "no order is both shipped and cancelled"
    assert found(one(order("cancelled", steps=("placed", "confirmed", "shipped", "cancelled")))) == {rule}
    assert found(one(order("cancelled"), ship=shipment("scheduled", "dispatched"))) == {rule}
    stopped_yet_dispatched = shipment("scheduled", "dispatched", cancelled_at=NOW)
    assert found(one(DELIVERED, payment("captured"), stopped_yet_dispatched, charges=[capture()])) == {rule}
    assert found(one(order("cancelled"), ship=shipment("scheduled", cancelled_at=NOW))) == set()


def test_stock_must_balance_and_agree_with_the_orders_once_drained():
    holding = one(order("confirmed"), payment("captured"), charges=[capture()])
    level = StockView(sku="MUG", on_hand=8, reserved=2, shipped=0, received=10)
    assert found(holding, stock=[level], when=DRAINED) == {"every order settles"}
    oversold = StockView(sku="MUG", on_hand=0, reserved=0, shipped=10, received=9)
    negative = StockView(sku="LAMP", on_hand=-1, reserved=1, shipped=0, received=0)
    assert found(stock=[oversold]) == {"on hand + reserved + shipped = received"}
    assert found(stock=[negative]) == {"stock never goes negative"}
    assert found(one(order("cancelled")), stock=[level]) == set()
    assert found(one(order("cancelled")), stock=[level], when=DRAINED) == {"inventory agrees with the orders"}


def test_the_provider_ledger_against_payments():
    charges = [capture("ch1", refunded=(1000,)), capture("ch2")]
    twice = one(order("cancelled"), payment("refunded"), charges=charges)
    assert found(twice) == {"never captured twice for an order (provider's ledger)"}
    assert found(twice, when=DRAINED) == {
        "never captured twice for an order (provider's ledger)",
        "payments knows every capture and refund of the provider",
        "every capture of a cancelled order is refunded",
    }
    # Refunds written past the charge's own counter (a provider's bug): the refunds themselves count.
    over = one(
        order("cancelled"),
        payment("refunded"),
        charges=[
            capture(refunded=(1000,)).model_copy(update={"refunds": capture(refunded=(600, 600)).refunds})
        ],
    )
    assert found(over) == {"refunds never exceed captures (provider's ledger)"}
    unknown_reference = one(order("confirmed"), payment("captured", reference="ch9"), charges=[capture()])
    assert found(unknown_reference) == {"what payments recorded is on the provider's ledger"}
    other_amount = one(order("confirmed"), payment("captured"), charges=[capture(amount=900)])
    assert found(other_amount) == {"what payments recorded is on the provider's ledger"}
    assert found(one(order("cancelled"), payment("refunded"), charges=[capture()])) == {
        "what payments recorded is on the provider's ledger"
    }
    ghost = OrderFacts("o-ghost", charges=(capture(),))
    assert found(ghost) == set()
    assert found(ghost, when=DRAINED) == {"payments knows every capture and refund of the provider"}


def test_a_dead_letter_is_reported():
    dlqs = [QueueDepth("inventory.dlq", 2), QueueDepth("orders.dlq", 0)]
    assert found(dlqs=dlqs) == {"no dead letter is left"}


def test_the_report_tallies_every_invariant_and_marks_those_left_for_a_drained_check():
    report = evaluate(Facts([one(DELIVERED, payment("captured"), charges=[capture()])], [], []), LIVE)
    tallies = {t.invariant: t for t in report.tallies()}
    assert tallies["every order settles"].checked == 1
    assert tallies["inventory agrees with the orders"].checked is None
    assert tallies["a shipped order has a shipment"].violated == 1
    as_json = report.as_dict()
    assert as_json["clean"] is False and len(as_json["invariants"]) == len(tallies)
    assert as_json["violations"] == [
        {
            "invariant": "a shipped order has a shipment",
            "subject": "order o1",
            "detail": "delivered without a shipment",
        }
    ]
