"""`emporium check` on the real actors, RabbitMQ, MongoDB and the provider simulator.

Each test writes an inconsistent state into its own databases, through the actors' own stores or
messages (and, for what no code path can produce, into the provider's ledger), then runs the
checker, which reads only through the actors' queries and the simulator's /ledger route. Where a
state is made by messages to one actor, that actor runs alone first, so that no other actor reacts
to what it emits; the others start before the check.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from faststream.rabbit import RabbitBroker
from pymongo import AsyncMongoClient

from actors.inventory.domain import StockLevel
from actors.inventory.store import InventoryStore
from actors.orders.store import OrdersStore
from actors.payments.domain import Account, Order, Payment, Status
from actors.payments.store import PaymentsStore
from brokers.contracts.common import Line
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import CancelOrder, GetOrder, OrderLine, OrderStep, OrderView, PlaceOrder
from brokers.contracts.payments import GetPayment, PaymentView
from brokers.contracts.shipping import AdvanceShipment, GetShipment, ShipmentView
from brokers.envelope import Envelope
from brokers.factory import publish_body
from brokers.rpc import Requester
from brokers.settings import Settings
from brokers.topology import COMMANDS
from ops.invariants import Report, check
from ops.payment_provider import RunningSimulator, ledger_database, served
from tests.helpers import eventually, send
from tests.integration.support import requester, stock
from tests.integration.test_payments import cancelled, placed, reserved
from tests.integration.test_shipping import confirmed

CHECKED = ("orders", "payments", "inventory", "shipping", "notifications")  # the actors the checker asks
CARRIER_STEP_MS = 2_000  # time enough to cancel a confirmed order before its dispatch


@dataclass
class World:
    settings: Settings  # the test's, pointing at its simulator
    broker: RabbitBroker
    asker: Requester
    provider: RunningSimulator
    mongo: AsyncMongoClient  # retryWrites=false: direct writes of the test
    start_host: object
    started: set[str] = field(default_factory=set)

    async def start(self, *names: str) -> None:
        """Start these actors, or every one the checker asks that is not running yet."""
        chosen = [name for name in names or CHECKED if name not in self.started]
        if not chosen:
            return  # start_host() with no names would start every actor
        await self.start_host(*chosen, **overrides(self.settings))
        self.started.update(chosen)

    def db(self, name: str):
        return self.mongo[name]

    @property
    def orders(self) -> OrdersStore:
        return OrdersStore(self.db(self.settings.database_name("orders")))

    @property
    def inventory(self) -> InventoryStore:
        return InventoryStore(self.db(self.settings.database_name("inventory")))

    @property
    def payments(self) -> PaymentsStore:
        return PaymentsStore(self.db(self.settings.database_name("payments")))

    @property
    def ledger(self):
        return self.db(ledger_database(self.settings))

    async def check(self, *, drained: bool = False) -> Report:
        await self.start()
        return await check(self.settings, drained=drained)

    async def charge_at_the_provider(self, order_id: str, amount: int = 4_200) -> str:
        """A capture made at the provider directly, as nobody in emporium asked for."""
        body = {"idempotency_key": order_id, "amount_cents": amount, "currency": "EUR", "customer_id": "c1"}
        async with httpx.AsyncClient(base_url=self.provider.url, timeout=5.0) as http:
            response = await http.post("/charges", json=body)
        response.raise_for_status()
        return response.json()["charge_id"]

    async def payment(self, order_id: str, status: str) -> PaymentView:
        return await eventually(
            lambda: self.asker.ask(GetPayment(order_id=order_id), PaymentView),
            until=lambda view: view.status == status,
            what=f"payment of {order_id} {status}",
        )

    async def order_status(self, order_id: str, status: str, timeout: float = 30.0) -> OrderView:
        return await eventually(
            lambda: self.asker.ask(GetOrder(order_id=order_id), OrderView),
            until=lambda view: view.status == status,
            timeout=timeout,
            what=f"order {order_id} {status}",
        )


def overrides(settings: Settings) -> dict[str, object]:
    return {
        "emporium_payment_provider_url": settings.emporium_payment_provider_url,
        "emporium_carrier_step_ms": CARRIER_STEP_MS,
    }


@pytest.fixture
async def world(settings: Settings, broker, start_host, mongo) -> AsyncIterator[World]:
    # The ledger in <prefix>_provider: the test's mongo fixture drops it with the actors' databases.
    async with served(settings=settings) as provider:
        ours = settings.model_copy(update={"emporium_payment_provider_url": provider.url})
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, retryWrites=False, tz_aware=True)
        try:
            async with requester(ours) as asker:
                yield World(ours, broker, asker, provider, client, start_host)
        finally:
            await client.close()


def view(order_id: str, *steps: str, sku: str = "MUG-1", quantity: int = 1) -> OrderView:
    """An order as orders' read model holds it, having gone through ``steps``."""
    at = datetime.now(UTC)
    status = steps[-1]
    return OrderView(
        order_id=order_id,
        customer_id="c1",
        status=status,
        lines=[OrderLine(sku=sku, quantity=quantity, unit_price_cents=1_400)],
        total_cents=1_400 * quantity,
        currency="EUR",
        cancel_reason="customer" if status == "cancelled" else None,
        request_digest="d",
        placed_at=at,
        updated_at=at,
        history=[OrderStep(status=s, at=at) for s in steps],
        version=len(steps),
    )


async def set_level(world: World, sku: str, **counts: int) -> None:
    """Write a SKU's stock level (on_hand, reserved, shipped, received) as inventory's store writes
    it, whatever the rules say."""
    store = world.inventory
    await store.add_sku(sku, f"p-{sku}")
    await store.save_levels({sku: await store.level(sku)}, {sku: StockLevel(sku, **counts)})


async def charged_by_payments(world: World, order_id: str, *, cancel: bool = False) -> PaymentView:
    """An order charged (and refunded, if ``cancel``) by payments running alone, as the saga would."""
    await world.start("payments")
    await send(world.broker, placed(order_id), correlation_id=order_id)
    await send(world.broker, reserved(order_id), correlation_id=order_id)
    payment = await world.payment(order_id, "captured")
    if not cancel:
        return payment
    await send(world.broker, cancelled(order_id), correlation_id=order_id)
    return await world.payment(order_id, "refunded")


def found(report: Report) -> set[tuple[str, str]]:
    return {(v.invariant, v.subject) for v in report.violations}


def detail(report: Report, invariant: str) -> str:
    (violation,) = [v for v in report.violations if v.invariant == invariant]
    return violation.detail


async def emporium_check(world: World, *args: str) -> tuple[int, str]:
    """`emporium check ARGS` in a process of its own, on the test's vhost, databases and simulator."""
    settings = world.settings
    environment = {
        **os.environ,
        "COLUMNS": "200",
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url,
        "MONGODB_URL": settings.mongodb_url,
        "EMPORIUM_DB_PREFIX": settings.emporium_db_prefix,
        "EMPORIUM_PAYMENT_PROVIDER_URL": settings.emporium_payment_provider_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        "check",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode()


# --- a clean saga ------------------------------------------------------------------------------


async def test_a_saga_delivered_declined_and_refunded_reports_nothing_and_checks_every_invariant(world):
    await world.start()
    await world.provider.control.behave(decline_customers=["c-poor"])
    await stock(world.broker, world.asker, "MUG-1", 5)
    await eventually(lambda: world.orders.prices(["MUG-1"]), what="orders to price MUG-1")
    orders = {"o-delivered": ("c1", 2), "o-declined": ("c-poor", 1), "o-back": ("c1", 1)}
    for order_id, (customer, quantity) in orders.items():
        lines = [Line(sku="MUG-1", quantity=quantity)]
        command = PlaceOrder(order_id=order_id, customer_id=customer, lines=lines, request_digest="d")
        await send(world.broker, command, correlation_id=order_id)
    await world.order_status("o-back", "confirmed")
    await send(world.broker, CancelOrder(order_id="o-back", customer_id="c1"), correlation_id="o-back")
    ends = {"o-delivered": "delivered", "o-declined": "cancelled", "o-back": "cancelled"}
    for order_id, status in ends.items():
        await world.order_status(order_id, status)

    # Compensations and notifications may still be on their way when the orders are terminal.
    report = await eventually(
        lambda: world.check(drained=True), until=lambda r: r.clean, what="a clean check"
    )
    code, output = await emporium_check(world, "--drained", "--json")

    assert (report.orders, report.in_flight, report.skus) == (3, 0, 1)
    assert (await world.payment("o-back", "refunded")).provider_reference
    unchecked = [t.invariant for t in report.tallies() if not t.checked]
    assert unchecked == []
    assert code == 0, output
    printed = json.loads(output)
    assert printed["clean"] and printed["drained"] and printed["violations"] == []
    assert {t["invariant"]: t["checked"] for t in printed["invariants"]} == {
        t.invariant: t.checked for t in report.tallies()
    }


# --- orders and shipping -------------------------------------------------------------------------


async def test_an_order_shipped_and_cancelled_is_reported_from_its_history_and_from_its_shipment(world):
    # Shipping alone dispatches o-left's parcel; nobody else hears of it.
    await world.start("shipping")
    await send(world.broker, confirmed("o-left"), correlation_id="o-left")
    await eventually(lambda: world.asker.ask(GetShipment(order_id="o-left"), ShipmentView), what="a shipment")
    await send(world.broker, AdvanceShipment(order_id="o-left", to="dispatched"), correlation_id="o-left")
    await eventually(
        lambda: world.asker.ask(GetShipment(order_id="o-left"), ShipmentView),
        until=lambda shipment: shipment.status == "dispatched",
        what="o-left dispatched",
    )
    await world.orders.save_view(view("o-left", "placed", "reserved", "confirmed", "cancelled"))
    await world.orders.save_view(view("o-history", "placed", "reserved", "confirmed", "shipped", "cancelled"))
    await world.orders.save_view(view("o-fine", "placed", "cancelled"))

    report = await world.check()

    rule = "no order is both shipped and cancelled"
    assert found(report) == {(rule, "order o-left"), (rule, "order o-history")}
    assert report.checked[rule] == 3
    left = next(v for v in report.violations if v.subject == "order o-left")
    assert "cancelled, yet its shipment" in left.detail and "dispatched" in left.detail
    history = next(v for v in report.violations if v.subject == "order o-history")
    assert "shipped -> cancelled" in history.detail


async def test_an_order_not_terminal_is_a_violation_only_once_drained(world):
    await world.orders.save_view(view("o-stuck", "placed"))
    await world.orders.save_view(view("o-done", "placed", "cancelled"))

    live, drained = await world.check(), await world.check(drained=True)

    assert (live.clean, live.in_flight) == (True, 1)
    assert found(drained) == {("every order settles", "order o-stuck")}
    assert detail(drained, "every order settles") == "still placed after drain"


# --- inventory -----------------------------------------------------------------------------------


async def test_an_oversold_sku_and_a_negative_level_are_reported(world):
    await set_level(world, "MUG-OVER", on_hand=0, reserved=0, shipped=10, received=9)
    await set_level(world, "MUG-NEG", on_hand=-1, reserved=1, shipped=0, received=0)
    await set_level(world, "MUG-OK", on_hand=3, reserved=0, shipped=0, received=3)

    report = await world.check()

    assert found(report) == {
        ("on hand + reserved + shipped = received", "SKU MUG-OVER"),
        ("stock never goes negative", "SKU MUG-NEG"),
    }
    assert detail(report, "on hand + reserved + shipped = received") == (
        "on hand 0 + reserved 0 + shipped 10 = 10, received 9"
    )
    assert detail(report, "stock never goes negative") == "on hand -1"
    assert report.checked["stock never goes negative"] == 3


async def test_inventory_that_shipped_more_than_the_orders_is_reported_once_drained(world):
    delivered = ("placed", "reserved", "confirmed", "shipped", "delivered")
    await world.orders.save_view(view("o-sent", *delivered, quantity=2))
    await world.orders.save_view(view("o-held", "placed", "reserved", sku="MUG-2"))
    await set_level(world, "MUG-1", on_hand=7, reserved=0, shipped=3, received=10)
    await set_level(world, "MUG-2", on_hand=4, reserved=1, shipped=0, received=5)

    live, drained = await world.check(), await world.check(drained=True)

    agree = "inventory agrees with the orders"
    assert agree not in {v.invariant for v in live.violations}
    assert {(i, s) for i, s in found(drained) if i == agree} == {(agree, "SKU MUG-1")}
    assert detail(drained, agree) == "reserved 0 / shipped 3 at inventory, orders hold 0 / shipped 2"


# --- dead letters --------------------------------------------------------------------------------


async def test_a_dead_letter_left_in_a_dlq_is_reported(world):
    await world.start()
    assert (await world.check()).clean
    invalid = b'{"sku": "not a sku", "quantity": 1}'  # parked at once: no retry makes it valid
    await publish_body(
        world.broker,
        invalid,
        exchange=COMMANDS.name,
        routing_key=Restock.TYPE,
        envelope=Envelope(correlation_id="c-bad", type=Restock.TYPE),
    )

    report = await eventually(world.check, until=lambda r: not r.clean, what="the dead letter seen")

    assert found(report) == {("no dead letter is left", "inventory.dlq")}
    assert detail(report, "no dead letter is left").startswith("1 dead letter(s)")
    assert report.checked["no dead letter is left"] >= len(CHECKED)


# --- payments and the provider's ledger ----------------------------------------------------------


async def test_a_second_capture_for_an_order_at_the_provider_is_reported(world):
    payment = await charged_by_payments(world, "o-twice")
    # A provider that lost its idempotency memory (the in-memory simulator after a restart did)
    # captures a retry again. The ledger's unique key forbids it, so it is written past the key.
    charges = world.ledger["charges"]
    await charges.drop_index("idempotency_key_1")
    again = await charges.find_one({"_id": payment.provider_reference})
    await charges.insert_one({**again, "_id": "ch_again", "at": datetime.now(UTC)})

    live, drained = await world.check(), await world.check(drained=True)

    twice = "never captured twice for an order (provider's ledger)"
    assert found(live) == {(twice, "order o-twice")}
    first = payment.provider_reference
    assert detail(live, twice) == f"2 captures at the provider: {first} (4200), ch_again (4200)"
    unknown = "payments knows every capture and refund of the provider"
    assert found(drained) == {(twice, "order o-twice"), (unknown, "order o-twice")}
    assert detail(drained, unknown) == f"the provider captured ch_again (4200); payments: captured {first}"


async def test_a_cancelled_order_whose_capture_was_never_refunded_is_reported_once_drained(world):
    payment = await charged_by_payments(world, "o-kept")
    await world.orders.save_view(view("o-kept", "placed", "reserved", "cancelled", quantity=3))

    live, drained = await world.check(), await world.check(drained=True)

    refunded = "every capture of a cancelled order is refunded"
    assert live.clean
    assert found(drained) == {(refunded, "order o-kept")}
    assert detail(drained, refunded) == (
        f"payments still shows it captured; the provider kept 4200 of {payment.provider_reference}"
    )


async def test_refunds_beyond_the_capture_at_the_provider_are_reported(world):
    await charged_by_payments(world, "o-over", cancel=True)
    refunds = world.ledger["refunds"]
    refund = await refunds.find_one({"idempotency_key": "refund-o-over"})
    await refunds.insert_one({**refund, "_id": "re_again", "idempotency_key": "refund-o-over-again"})

    report = await world.check(drained=True)

    over = "refunds never exceed captures (provider's ledger)"
    assert found(report) == {(over, "order o-over")}
    assert detail(report, over) == "the provider refunded 8400 of 4200 captured"


async def test_what_payments_recorded_and_the_provider_never_did_is_reported(world):
    async def recorded_by_payments(order_id: str, payment: Payment, *, cancelled: bool = False) -> None:
        order = Order(order_id, "c1", 4_200, "EUR")
        at = datetime.now(UTC)
        await world.payments.save(Account(order_id, at, order, True, cancelled, payment))

    await recorded_by_payments("o-phantom", Payment(Status.CAPTURED, 1, "ch_phantom"))
    unrefunded = await world.charge_at_the_provider("o-unrefunded")
    refunded = Payment(Status.REFUNDED, 1, unrefunded, refund_reference="re_x")
    await recorded_by_payments("o-unrefunded", refunded, cancelled=True)
    cheap = await world.charge_at_the_provider("o-cheap", amount=4_000)
    await recorded_by_payments("o-cheap", Payment(Status.CAPTURED, 1, cheap))

    report = await world.check()

    recorded = "what payments recorded is on the provider's ledger"
    assert found(report) == {(recorded, f"order {o}") for o in ("o-phantom", "o-unrefunded", "o-cheap")}
    details = {v.subject: v.detail for v in report.violations}
    assert details["order o-phantom"].endswith("the provider has no such capture")
    assert details["order o-unrefunded"].endswith("the provider refunded 0 of it")
    assert details["order o-cheap"].endswith("the provider captured 4000")


async def test_a_capture_payments_does_not_know_of_is_reported_once_drained_and_by_the_command(world):
    charge_id = await world.charge_at_the_provider("o-ghost")

    live, drained = await world.check(), await world.check(drained=True)
    live_code, live_output = await emporium_check(world)
    drained_code, drained_output = await emporium_check(world, "--drained")

    unknown = "payments knows every capture and refund of the provider"
    assert live.clean
    assert found(drained) == {(unknown, "order o-ghost")}
    assert detail(drained, unknown) == f"the provider captured {charge_id} (4200); payments: no payment"
    assert live_code == 0 and "needs --drained" in live_output and "no invariant is violated" in live_output
    assert drained_code == 1, drained_output
    assert unknown in drained_output and "order o-ghost" in drained_output
    assert "needs --drained" not in drained_output
