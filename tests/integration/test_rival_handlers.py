"""Rival handlers of one entity, run at the same moment on the real MongoDB (see rivals.py).

Each test forces the interleaving that breaks a read-one-write-another design (both read, then
both write) and checks the invariant the saga relies on.
"""

from __future__ import annotations

from actors.analytics.handlers import get_stats
from actors.analytics.store import AnalyticsStore
from actors.identity.domain import LAST_ADMIN
from actors.identity.store import IdentityStore
from actors.orders.store import OrdersStore
from actors.payments.domain import Status
from actors.payments.store import PaymentsStore
from actors.shipping.store import ShippingStore
from brokers.contracts.analytics import GetStats
from brokers.contracts.common import Line
from brokers.contracts.identity import CreateAdmin, DeactivateUser, UserDeactivated
from brokers.contracts.inventory import Restock, StockReleased, StockReserved
from brokers.contracts.orders import (
    CancelOrder,
    OrderCancellationRequested,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    PlaceOrder,
)
from brokers.contracts.payments import PaymentCaptured, PaymentRefunded
from brokers.contracts.shipping import ShipmentScheduled, ShipmentStopped
from ops.payment_provider import served
from tests.integration.rivals import Rivals
from tests.integration.support import order_placed, product_created
from tests.integration.test_payments import cancelled, placed, reserved


def confirmed(order_id: str) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id="c-1",
        lines=[OrderLine(sku="LAMP-1", quantity=1, unit_price_cents=900)],
        total_cents=900,
        currency="EUR",
    )


async def test_a_shipment_scheduled_and_stopped_at_once_ends_stopped(settings, mongo):
    """Before: schedule read "not cancelled", stop read "no shipment", and each wrote its own
    document, so a cancelled order's parcel was dispatched."""
    rivals = Rivals("shipping", settings, mongo)
    await rivals.prepare()
    for n in range(5):
        order_id = f"o-ship-{n}"
        messages = (confirmed(order_id), OrderCancellationRequested(order_id=order_id, customer_id="c-1"))
        rivalries = await rivals.at_once(*messages, correlation_id=order_id, writes={"save"})
        await rivals.settle(rivalries, order_id)
        assert any(r.lost for r in rivalries), "both wrote without conflicting"

        shipment = await ShippingStore(rivals.db).find(order_id)
        assert shipment is not None and shipment.cancelled_at is not None, (order_id, rivalries)
        stopped = [e for e in await rivals.outbox(ShipmentStopped.TYPE) if order_id in e["body"].decode()]
        assert len(stopped) == 1
    # A scheduled shipment was either stopped after it, or never scheduled: never left running.
    assert len(await rivals.outbox(ShipmentScheduled.TYPE)) <= 5


async def test_a_reservation_and_a_cancel_at_once_never_leave_stock_reserved(settings, mongo):
    """Reserve reads "no reservation" and takes the stock; release reads "no reservation" and
    records "cancelled before reserving": both write the order's one reservation document."""
    rivals = Rivals("inventory", settings, mongo)
    await rivals.prepare()
    await rivals.apply(product_created("SKU-R"), "setup-1")
    await rivals.apply(Restock(sku="SKU-R", quantity=5), "setup-2")
    for n in range(5):
        order_id = f"o-res-{n}"
        messages = (
            order_placed(order_id, ("SKU-R", 1)),
            OrderCancelled(order_id=order_id, customer_id="customer-1", reason="timeout"),
        )
        rivalries = await rivals.at_once(*messages, correlation_id=order_id, writes={"apply"})
        await rivals.settle(rivalries, order_id)
        assert any(r.lost for r in rivalries), "both wrote without conflicting"

    stock = await rivals.db["stock"].find_one({"_id": "SKU-R"})
    assert (stock["on_hand"], stock["reserved"], stock["received"]) == (5, 0, 5)
    reservations = await rivals.db["reservations"].find({}).to_list()
    assert {r["status"] for r in reservations} <= {"released", "cancelled_before_reserving"}
    assert len(await rivals.outbox(StockReserved.TYPE)) == len(await rivals.outbox(StockReleased.TYPE))


async def test_two_orders_for_the_last_unit_at_once_reserve_it_once(settings, mongo):
    rivals = Rivals("inventory", settings, mongo)
    await rivals.prepare()
    await rivals.apply(product_created("SKU-LAST"), "setup-1")
    await rivals.apply(Restock(sku="SKU-LAST", quantity=1), "setup-2")
    first, second = order_placed("o-a", ("SKU-LAST", 1)), order_placed("o-b", ("SKU-LAST", 1))
    rivalries = await rivals.at_once(first, second, correlation_id="two-orders", writes={"apply"})
    await rivals.settle(rivalries, "two-orders")
    assert any(r.lost for r in rivalries), "both wrote without conflicting"

    stock = await rivals.db["stock"].find_one({"_id": "SKU-LAST"})
    assert (stock["on_hand"], stock["reserved"]) == (0, 1)
    assert len(await rivals.outbox(StockReserved.TYPE)) == 1


async def test_a_capture_and_a_customer_cancel_at_once_leave_one_line_of_history(settings, mongo):
    """Both aim at the order's next version: one appends, the other decides again on its result,
    so the order is either cancelled unpaid or confirmed and then asks shipping, never both."""
    rivals = Rivals("orders", settings, mongo)
    await rivals.prepare()
    await rivals.apply(product_created("SKU-O"), "setup-1")
    order_id = "o-race"
    await rivals.apply(
        PlaceOrder(
            order_id=order_id, customer_id="c-1", lines=[Line(sku="SKU-O", quantity=1)], request_digest="d"
        ),
        order_id,
    )
    await rivals.apply(StockReserved(order_id=order_id, lines=[Line(sku="SKU-O", quantity=1)]), order_id)
    [placed] = await rivals.outbox(OrderPlaced.TYPE)
    total = OrderPlaced.parse(placed["body"]).total_cents
    capture = PaymentCaptured(
        payment_id="pay-1",
        order_id=order_id,
        customer_id="c-1",
        amount_cents=total,
        currency="EUR",
        provider_reference="ref-1",
    )
    rivalries = await rivals.at_once(
        capture, CancelOrder(order_id=order_id, customer_id="c-1"), correlation_id=order_id, writes={"append"}
    )
    await rivals.settle(rivalries, order_id)

    assert any(r.lost for r in rivalries), "both wrote without conflicting"
    stream = await rivals.db["order_events"].find({"order_id": order_id}).sort("version", 1).to_list()
    assert [e["version"] for e in stream] == list(range(1, len(stream) + 1))
    assert [e["type"] for e in stream] in (
        ["placed", "reserved", "cancelled"],
        ["placed", "reserved", "confirmed", "cancelling"],
    )
    view = await OrdersStore(rivals.db).view(order_id)
    assert view.status == stream[-1]["type"] and view.version == len(stream)


async def test_a_charge_and_a_cancel_at_once_never_leave_the_order_charged(settings, mongo):
    """The charge reads "not cancelled" and charges; the cancel reads "not reserved" and charges
    nothing. Both write the order's one account: whichever runs again finds the other's fact and
    gives back the capture (the charge, run again on the cancelled account, looks it up), so the
    provider's ledger ends empty or with one capture refunded in full."""
    async with served() as simulator:
        charging = settings.model_copy(update={"emporium_payment_provider_url": simulator.url})
        rivals = Rivals("payments", charging, mongo)
        await rivals.prepare()
        for n in range(5):
            order_id = f"o-pay-{n}"
            await rivals.apply(placed(order_id), order_id)
            before = await simulator.control.stats()
            messages = (reserved(order_id), cancelled(order_id))
            rivalries = await rivals.at_once(*messages, correlation_id=order_id, writes={"save"})
            await rivals.settle(rivalries, order_id)
            assert any(r.lost for r in rivalries), "both wrote without conflicting"
            # A charge retried before the cancel has committed still reads "not cancelled" and asks
            # again, under the same idempotency key: the provider answers with the same capture.
            assert (await simulator.control.stats()).charges - before.charges <= 1, "captured twice"

            ledger = await simulator.control.ledger(order_id)
            kept = [(c.status, c.refunded_cents, len(c.refunds)) for c in ledger]
            assert kept in ([], [("refunded", 4_200, 1)]), (order_id, kept, rivalries)
            account = await PaymentsStore(rivals.db).account(order_id)
            assert account is not None and account.cancelled
            assert account.payment is None or account.payment.status is Status.REFUNDED, account
    captures, refunds = await rivals.outbox(PaymentCaptured.TYPE), await rivals.outbox(PaymentRefunded.TYPE)
    assert len(captures) == len(refunds) <= 5


async def test_two_administrators_deactivating_each_other_at_once_leave_one_active(settings, mongo):
    """Each reads two active administrators and would leave one; both write the administrators'
    guard, so the second decides again, finds the last one, and is refused."""
    rivals = Rivals("identity", settings, mongo)
    await rivals.prepare()
    for name in ("ada", "bea"):
        admin = CreateAdmin(user_id=name, email=f"{name}@example.com", name=name, password="Correct-horse-42")
        await rivals.apply(admin, f"setup-{name}")
    messages = (
        DeactivateUser(deactivation_id="d-ada", user_id="ada", requested_by="bea"),
        DeactivateUser(deactivation_id="d-bea", user_id="bea", requested_by="ada"),
    )
    rivalries = await rivals.at_once(*messages, correlation_id="admins", writes={"record_deactivation"})
    await rivals.settle(rivalries, "admins")

    assert any(r.lost for r in rivalries), "both wrote without conflicting"
    store = IdentityStore(rivals.db)
    assert [(await store.find(name)).active for name in ("ada", "bea")].count(True) == 1
    refusals = [d["refusal"] for d in await rivals.db["deactivations"].find({}).to_list()]
    assert sorted(refusals, key=str) == [None, LAST_ADMIN], refusals
    assert len(await rivals.outbox(UserDeactivated.TYPE)) == 1


async def test_a_capture_and_a_confirmation_at_once_are_each_counted_once(settings, mongo):
    """Both read the order's facts, then each writes the facts and adds to a counter shard (picked
    at random: maybe the same one, maybe not). The facts are written over the version read, so one
    of them decides again on the other's result and the figures count each fact once."""
    rivals = Rivals("analytics", settings, mongo)
    await rivals.prepare()
    for n in range(5):
        order_id = f"o-stats-rival-{n}"
        placed = order_placed(order_id, ("SKU-A", 2))
        await rivals.apply(placed, order_id)
        paid = {"payment_id": f"pay-{order_id}", "order_id": order_id, "customer_id": placed.customer_id}
        capture = PaymentCaptured(
            **paid, amount_cents=placed.total_cents, currency="EUR", provider_reference=f"ref-{order_id}"
        )
        rivalries = await rivals.at_once(
            capture, confirmed(order_id), correlation_id=order_id, writes={"record"}
        )
        await rivals.settle(rivalries, order_id)
        assert any(r.lost for r in rivalries), "both wrote without conflicting"

    stats = await get_stats(GetStats(), AnalyticsStore(rivals.db))
    assert {status: n for status, n in stats.orders_by_status.items() if n} == {"confirmed": 5}
    assert stats.revenue_cents == 5 * placed.total_cents
