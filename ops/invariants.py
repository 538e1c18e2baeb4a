"""The invariant checker: reads every actor's data through its queries and reports what is wrong.

It never opens an actor's database: what it sees is what the actors answer, the way the edge and
operators see them. Orders still in flight are counted, not reported, unless they are past the
point where the saga should have settled them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from brokers.contracts.inventory import ListStock, StockPage, StockView
from brokers.contracts.notifications import ListNotifications, NotificationPage
from brokers.contracts.orders import ListOrders, OrderPage, OrderView
from brokers.contracts.payments import GetPayment, PaymentView
from brokers.contracts.shipping import GetShipment, ShipmentView
from brokers.rpc import QueryFailed, Requester, requesting
from brokers.settings import Settings

TERMINAL = {"delivered", "cancelled"}
PAID = {"confirmed", "shipped", "delivered"}
HOLDING_STOCK = {"reserved", "confirmed"}  # reserved at inventory, not yet dispatched
SHIPPED = {"shipped", "delivered"}
_CONCURRENCY = 16


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str


@dataclass
class Report:
    orders: int = 0
    in_flight: int = 0
    skus: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class OrderFacts:
    order: OrderView
    payment: PaymentView | None
    shipment: ShipmentView | None
    notifications: NotificationPage


async def _pages(requester: Requester, make_query: Any, page_type: Any) -> list[Any]:
    items, offset = [], 0
    while True:
        page = await requester.ask(make_query(offset), page_type)
        items.extend(page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return items


async def _maybe(requester: Requester, query: Any, data_type: Any) -> Any:
    try:
        return await requester.ask(query, data_type)
    except QueryFailed as exc:
        if exc.problem.status == 404:
            return None
        raise


async def _facts(requester: Requester, order: OrderView, limit: asyncio.Semaphore) -> OrderFacts:
    async with limit:
        payment, shipment, notifications = await asyncio.gather(
            _maybe(requester, GetPayment(order_id=order.order_id), PaymentView),
            _maybe(requester, GetShipment(order_id=order.order_id), ShipmentView),
            requester.ask(ListNotifications(order_id=order.order_id, limit=200), NotificationPage),
        )
    return OrderFacts(order, payment, shipment, notifications)


async def gather_facts(requester: Requester) -> tuple[list[OrderFacts], list[StockView]]:
    orders = await _pages(requester, lambda offset: ListOrders(offset=offset, limit=100), OrderPage)
    stock = await _pages(requester, lambda offset: ListStock(offset=offset, limit=500), StockPage)
    limit = asyncio.Semaphore(_CONCURRENCY)
    facts = await asyncio.gather(*(_facts(requester, order, limit) for order in orders))
    return list(facts), stock


def check_orders(facts: list[OrderFacts], *, settle_by: datetime) -> list[Violation]:
    """Per-order rules: settled in time, paid exactly when it should be, told once per event."""
    found = []
    for fact in facts:
        order, payment = fact.order, fact.payment
        subject = f"order {order.order_id}"

        def broken(invariant: str, detail: str, subject: str = subject) -> None:
            found.append(Violation(invariant, subject, detail))

        if order.status not in TERMINAL | {"confirmed", "shipped"} and order.placed_at < settle_by:
            broken("every order settles", f"still {order.status} since {order.placed_at:%H:%M:%S}; its deadline passed")
        if order.status in PAID and (payment is None or payment.status != "captured"):
            broken("a paid order has one capture", f"{order.status} but payment is {payment.status if payment else 'missing'}")
        if order.status in PAID and payment is not None and payment.amount_cents != order.total_cents:
            broken("a paid order has one capture", f"captured {payment.amount_cents} for a total of {order.total_cents}")
        if order.status == "cancelled" and payment is not None and payment.status == "captured":
            broken("every capture of a cancelled order is refunded", "cancelled, payment still captured")
        if order.status in SHIPPED and fact.shipment is None:
            broken("a shipped order has a shipment", f"{order.status} without a shipment")
        templates = Counter(n.template for n in fact.notifications.items)
        for template, count in templates.items():
            if count > 1:
                broken("each notification is sent once", f"{template} sent {count} times")
    return found


def check_stock(stock: list[StockView], facts: list[OrderFacts]) -> list[Violation]:
    """Stock rules: nothing negative, every unit accounted for, reservations match the orders."""
    found = []
    for level in stock:
        subject = f"SKU {level.sku}"
        if min(level.on_hand, level.reserved, level.shipped, level.received) < 0:
            found.append(Violation("stock never goes negative", subject, f"{level}"))
        if level.on_hand + level.reserved + level.shipped != level.received:
            found.append(
                Violation(
                    "on hand + reserved + shipped = received",
                    subject,
                    f"{level.on_hand} + {level.reserved} + {level.shipped} != {level.received}",
                )
            )
    if any(f.order.status not in TERMINAL | HOLDING_STOCK | SHIPPED for f in facts):
        return found  # orders between placed and reserved: inventory may be ahead of orders
    held, shipped = Counter(), Counter()
    for fact in facts:
        for line in fact.order.lines:
            if fact.order.status in HOLDING_STOCK:
                held[line.sku] += line.quantity
            elif fact.order.status in SHIPPED:
                shipped[line.sku] += line.quantity
    for level in stock:
        if level.reserved != held[level.sku] or level.shipped != shipped[level.sku]:
            found.append(
                Violation(
                    "inventory agrees with the orders",
                    f"SKU {level.sku}",
                    f"reserved {level.reserved} / shipped {level.shipped} at inventory, "
                    f"orders hold {held[level.sku]} / shipped {shipped[level.sku]}",
                )
            )
    return found


async def check(settings: Settings, *, grace: timedelta = timedelta(seconds=30)) -> Report:
    async with requesting(settings) as requester:
        facts, stock = await gather_facts(requester)
    settle_by = datetime.now(UTC) - timedelta(milliseconds=settings.emporium_order_deadline_ms) - grace
    return Report(
        orders=len(facts),
        in_flight=sum(f.order.status not in TERMINAL for f in facts),
        skus=len(stock),
        violations=check_orders(facts, settle_by=settle_by) + check_stock(stock, facts),
    )
