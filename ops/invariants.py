"""The invariant checker: reads every actor's data through its queries, and the payment provider's
ledger through the provider's own route, and reports what is wrong.

It never opens an actor's database: what it sees is what the actors answer, the way the edge and
operators see them.

Two kinds of invariants. Most hold at every moment, because what they compare changes in one place,
or in an order the saga fixes (the provider captures before payments records it, so what payments
recorded must be on the provider's ledger). Others compare actors that learn of a change one after
the other (inventory releases a cancelled order's stock after orders cancelled it, payments records
a capture after the provider made it): they hold once the system is drained, nothing in flight, and
are checked only then (``drained=True``, ``emporium check --drained``). Drained, an order that is not
delivered or cancelled is a violation too; otherwise only one past its deadline is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from brokers.contracts.inventory import ListStock, StockPage, StockView
from brokers.contracts.notifications import ListNotifications, NotificationPage, NotificationView
from brokers.contracts.orders import ListOrders, OrderPage, OrderView
from brokers.contracts.payments import ListPayments, PaymentPage, PaymentView
from brokers.contracts.shipping import GetShipment, ShipmentView
from brokers.dlq import DlqError, QueueDepth, dead_letter_queues
from brokers.rpc import BrokerUnavailable, QueryFailed, QueryTimeout, Requester, requesting
from brokers.settings import Settings
from brokers.topology import UNROUTED_EVENTS
from ops.payment_provider import Charge, SimulatorControl

TERMINAL = {"delivered", "cancelled"}
# "cancelling" was confirmed: its capture stands until shipping answers and orders cancels it.
PAID = {"confirmed", "cancelling", "shipped", "delivered"}
# Reserved at inventory and not yet dispatched ("cancelling": shipping has not answered yet).
HOLDING_STOCK = {"reserved", "confirmed", "cancelling"}
SHIPPED = {"shipped", "delivered"}
# Past confirmation an order waits for the carrier, not for the saga: no deadline applies.
AWAITING_CARRIER = {"confirmed", "cancelling", "shipped"}
MONEY_TAKEN = {"captured", "refunded"}  # payment statuses that name a capture at the provider
_CONCURRENCY = 16
# What stops a check from reading everything: an actor or the provider not answering, RabbitMQ away.
UNREADABLE = (QueryTimeout, QueryFailed, BrokerUnavailable, DlqError, httpx.HTTPError, OSError)

S = TypeVar("S")


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str


@dataclass(frozen=True)
class When:
    """The moment of a check: orders placed before ``settle_by`` are past their deadline."""

    settle_by: datetime
    drained: bool = False


@dataclass(frozen=True)
class OrderFacts:
    """What every actor and the provider hold about one order id (any of them may know nothing)."""

    order_id: str
    order: OrderView | None = None
    payment: PaymentView | None = None
    shipment: ShipmentView | None = None
    notifications: tuple[NotificationView, ...] = ()
    charges: tuple[Charge, ...] = ()  # the provider's ledger under the order id (its idempotency key)

    @property
    def captures(self) -> list[Charge]:
        return [charge for charge in self.charges if charge.captured]


@dataclass(frozen=True)
class SkuFacts:
    level: StockView
    held: int = 0  # units that orders holding stock ordered
    shipped: int = 0  # units of the orders shipped or delivered


@dataclass(frozen=True)
class Facts:
    orders: list[OrderFacts]
    skus: list[SkuFacts]
    dead_letter_queues: list[QueueDepth]


@dataclass(frozen=True)
class Rule(Generic[S]):
    """One invariant over one kind of subject: ``check`` answers what is wrong with it, or None."""

    invariant: str
    check: Callable[[S, When], str | None]
    after_drain: bool = False


@dataclass(frozen=True)
class Tally:
    invariant: str
    after_drain: bool
    checked: int | None  # subjects checked; None: not checked (needs a drained system)
    violated: int


@dataclass
class Report:
    drained: bool = False
    orders: int = 0
    in_flight: int = 0
    skus: int = 0
    checked: dict[str, int] = field(default_factory=dict)  # invariant -> subjects it was checked on
    violations: list[Violation] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations

    def tallies(self) -> list[Tally]:
        """Every invariant, in the checker's order, with what it checked and found."""
        violated = Counter(v.invariant for v in self.violations)
        return [
            Tally(
                rule.invariant, rule.after_drain, self.checked.get(rule.invariant), violated[rule.invariant]
            )
            for rule in ALL_RULES
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "drained": self.drained,
            "orders": self.orders,
            "in_flight": self.in_flight,
            "skus": self.skus,
            "invariants": [asdict(tally) for tally in self.tallies()],
            "violations": [asdict(violation) for violation in self.violations],
        }


# --- the rules of an order -----------------------------------------------------------------------


def _settles(fact: OrderFacts, when: When) -> str | None:
    order = fact.order
    if order is None or order.status in TERMINAL:
        return None
    if when.drained:
        return f"still {order.status} after drain"
    if order.status not in AWAITING_CARRIER and order.placed_at < when.settle_by:
        return f"still {order.status} since {order.placed_at:%H:%M:%S}; its deadline passed"
    return None


def _paid_once(fact: OrderFacts, when: When) -> str | None:
    order, payment = fact.order, fact.payment
    if order is None or order.status not in PAID:
        return None
    if payment is None or payment.status != "captured":
        return f"{order.status} but payment is {payment.status if payment else 'missing'}"
    if payment.amount_cents != order.total_cents:
        return f"captured {payment.amount_cents} for a total of {order.total_cents}"
    return None


def _has_shipment(fact: OrderFacts, when: When) -> str | None:
    if fact.order is not None and fact.order.status in SHIPPED and fact.shipment is None:
        return f"{fact.order.status} without a shipment"
    return None


def _not_shipped_and_cancelled(fact: OrderFacts, when: When) -> str | None:
    order, shipment = fact.order, fact.shipment
    problems = []
    steps = [step.status for step in order.history] if order else []
    if "cancelled" in steps and SHIPPED & set(steps):
        problems.append(f"its history is {' -> '.join(steps)}")
    left = {step.status for step in shipment.history} & {"dispatched", "delivered"} if shipment else set()
    if shipment is not None and left:
        if order is not None and order.status == "cancelled":
            problems.append(f"cancelled, yet its shipment {shipment.shipment_id} is {shipment.status}")
        if shipment.cancelled_at is not None:
            stopped = f"{shipment.cancelled_at:%H:%M:%S}"
            problems.append(f"its shipment was stopped at {stopped}, yet is {shipment.status}")
    return "; ".join(problems) or None


def _notified_once(fact: OrderFacts, when: When) -> str | None:
    repeated = [(t, n) for t, n in Counter(n.template for n in fact.notifications).items() if n > 1]
    return ", ".join(f"{template} sent {count} times" for template, count in repeated) or None


def _captured_once(fact: OrderFacts, when: When) -> str | None:
    captures = fact.captures
    if len(captures) < 2:
        return None
    return f"{len(captures)} captures at the provider: " + ", ".join(
        f"{c.charge_id} ({c.amount_cents})" for c in captures
    )


def _refunds_within_captures(fact: OrderFacts, when: When) -> str | None:
    refunded = sum(refund.amount_cents for charge in fact.charges for refund in charge.refunds)
    captured = sum(charge.amount_cents for charge in fact.captures)
    return f"the provider refunded {refunded} of {captured} captured" if refunded > captured else None


def _payments_on_the_ledger(fact: OrderFacts, when: When) -> str | None:
    """What payments recorded the provider did first, so it is on the ledger whatever is in flight."""
    payment = fact.payment
    if payment is None or payment.status not in MONEY_TAKEN:
        return None
    said = f"payments recorded {payment.status} {payment.provider_reference} ({payment.amount_cents})"
    charge = next((c for c in fact.captures if c.charge_id == payment.provider_reference), None)
    if charge is None:
        return f"{said}; the provider has no such capture"
    if charge.amount_cents != payment.amount_cents:
        return f"{said}; the provider captured {charge.amount_cents}"
    if payment.status == "refunded" and charge.refunded_cents != payment.amount_cents:
        return f"{said}; the provider refunded {charge.refunded_cents} of it"
    return None


def _ledger_known_to_payments(fact: OrderFacts, when: When) -> str | None:
    payment = fact.payment
    known = payment.provider_reference if payment and payment.status in MONEY_TAKEN else None
    recorded = f"payments: {_recorded(payment)}"
    problems = []
    for charge in fact.captures:
        if charge.charge_id != known:
            problems.append(f"the provider captured {charge.charge_id} ({charge.amount_cents}); {recorded}")
        elif charge.refunded_cents and payment is not None and payment.status != "refunded":
            refunded = f"the provider refunded {charge.refunded_cents} of {charge.charge_id}"
            problems.append(f"{refunded}; {recorded}")
    return "; ".join(problems) or None


def _recorded(payment: PaymentView | None) -> str:
    if payment is None:
        return "no payment"
    return f"{payment.status} {payment.provider_reference}" if payment.provider_reference else payment.status


def _cancelled_refunded(fact: OrderFacts, when: When) -> str | None:
    if fact.order is None or fact.order.status != "cancelled":
        return None
    problems = []
    if fact.payment is not None and fact.payment.status == "captured":
        problems.append("payments still shows it captured")
    for charge in fact.captures:
        if charge.refunded_cents < charge.amount_cents:
            kept = charge.amount_cents - charge.refunded_cents
            problems.append(f"the provider kept {kept} of {charge.charge_id}")
    return "; ".join(problems) or None


# Names the chaos run's table counts in columns of their own.
CAPTURED_TWICE = "never captured twice for an order (provider's ledger)"
SHIPPED_AND_CANCELLED = "no order is both shipped and cancelled"
STOCK_RULES = (
    "stock never goes negative",
    "on hand + reserved + shipped = received",
    "inventory agrees with the orders",
)
NO_DEAD_LETTER = "no dead letter is left"
EVERY_ORDER_SETTLES = "every order settles"


ORDER_RULES: tuple[Rule[OrderFacts], ...] = (
    Rule(EVERY_ORDER_SETTLES, _settles),
    Rule("a paid order has one capture", _paid_once),
    Rule("a shipped order has a shipment", _has_shipment),
    Rule(SHIPPED_AND_CANCELLED, _not_shipped_and_cancelled),
    Rule("each notification is sent once", _notified_once),
    Rule(CAPTURED_TWICE, _captured_once),
    Rule("refunds never exceed captures (provider's ledger)", _refunds_within_captures),
    Rule("what payments recorded is on the provider's ledger", _payments_on_the_ledger),
    Rule(
        "payments knows every capture and refund of the provider", _ledger_known_to_payments, after_drain=True
    ),
    Rule("every capture of a cancelled order is refunded", _cancelled_refunded, after_drain=True),
)


# --- the rules of a SKU and of a dead-letter queue -----------------------------------------------


def _never_negative(sku: SkuFacts, when: When) -> str | None:
    level = sku.level
    counts = {
        "on hand": level.on_hand,
        "reserved": level.reserved,
        "shipped": level.shipped,
        "received": level.received,
    }
    return ", ".join(f"{name} {count}" for name, count in counts.items() if count < 0) or None


def _balanced(sku: SkuFacts, when: When) -> str | None:
    level = sku.level
    if level.on_hand + level.reserved + level.shipped == level.received:
        return None
    return (
        f"on hand {level.on_hand} + reserved {level.reserved} + shipped {level.shipped} = "
        f"{level.on_hand + level.reserved + level.shipped}, received {level.received}"
    )


def _agrees_with_orders(sku: SkuFacts, when: When) -> str | None:
    level = sku.level
    if (level.reserved, level.shipped) == (sku.held, sku.shipped):
        return None
    return (
        f"reserved {level.reserved} / shipped {level.shipped} at inventory, "
        f"orders hold {sku.held} / shipped {sku.shipped}"
    )


def _no_dead_letters(queue: QueueDepth, when: When) -> str | None:
    if not queue.messages:
        return None
    return f"{queue.messages} dead letter(s): `emporium dlq show {queue.name}`"


SKU_RULES: tuple[Rule[SkuFacts], ...] = (
    Rule(STOCK_RULES[0], _never_negative),
    Rule(STOCK_RULES[1], _balanced),
    Rule(STOCK_RULES[2], _agrees_with_orders, after_drain=True),
)
DLQ_RULES: tuple[Rule[QueueDepth], ...] = (Rule(NO_DEAD_LETTER, _no_dead_letters),)
ALL_RULES: tuple[Rule[Any], ...] = (*ORDER_RULES, *SKU_RULES, *DLQ_RULES)


def _apply(rules: Sequence[Rule[S]], subjects: Sequence[tuple[str, S]], when: When, report: Report) -> None:
    for rule in rules:
        if rule.after_drain and not when.drained:
            continue
        report.checked[rule.invariant] = len(subjects)
        for name, subject in subjects:
            detail = rule.check(subject, when)
            if detail is not None:
                report.violations.append(Violation(rule.invariant, name, detail))


def evaluate(facts: Facts, when: When) -> Report:
    known = [f.order for f in facts.orders if f.order is not None]
    report = Report(
        drained=when.drained,
        orders=len(known),
        in_flight=sum(o.status not in TERMINAL for o in known),
        skus=len(facts.skus),
    )
    _apply(ORDER_RULES, [(f"order {f.order_id}", f) for f in facts.orders], when, report)
    _apply(SKU_RULES, [(f"SKU {s.level.sku}", s) for s in facts.skus], when, report)
    _apply(DLQ_RULES, [(q.name, q) for q in facts.dead_letter_queues], when, report)
    return report


# --- gathering the facts -------------------------------------------------------------------------


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


async def _shipping_and_notifications(
    requester: Requester, order_id: str, limit: asyncio.Semaphore
) -> tuple[ShipmentView | None, tuple[NotificationView, ...]]:
    async with limit:
        shipment, notifications = await asyncio.gather(
            _maybe(requester, GetShipment(order_id=order_id), ShipmentView),
            requester.ask(ListNotifications(order_id=order_id, limit=200), NotificationPage),
        )
    return shipment, tuple(notifications.items)


def order_facts(
    orders: Iterable[OrderView],
    payments: Iterable[PaymentView],
    ledger: Iterable[Charge],
    followed: dict[str, tuple[ShipmentView | None, tuple[NotificationView, ...]]],
) -> list[OrderFacts]:
    """One OrderFacts per order id that orders, payments or the provider knows of."""
    views = {order.order_id: order for order in orders}
    paid = {payment.order_id: payment for payment in payments}
    charges: dict[str, list[Charge]] = {}
    for charge in ledger:
        charges.setdefault(charge.idempotency_key, []).append(charge)
    facts = []
    for order_id in sorted(views.keys() | paid.keys() | charges.keys()):
        shipment, notifications = followed.get(order_id, (None, ()))
        facts.append(
            OrderFacts(
                order_id,
                views.get(order_id),
                paid.get(order_id),
                shipment,
                notifications,
                tuple(charges.get(order_id, ())),
            )
        )
    return facts


def sku_facts(stock: Iterable[StockView], orders: Iterable[OrderView]) -> list[SkuFacts]:
    held, shipped = Counter[str](), Counter[str]()
    for order in orders:
        if order.status in HOLDING_STOCK:
            counted = held
        elif order.status in SHIPPED:
            counted = shipped
        else:
            continue
        for line in order.lines:
            counted[line.sku] += line.quantity
    return [SkuFacts(level, held[level.sku], shipped[level.sku]) for level in stock]


async def gather_facts(settings: Settings) -> Facts:
    provider = httpx.AsyncClient(base_url=settings.emporium_payment_provider_url, timeout=10.0)
    async with requesting(settings, app_name="emporium-check") as requester, provider:
        orders, payments, stock, ledger, dead_letters = await asyncio.gather(
            _pages(requester, lambda offset: ListOrders(offset=offset, limit=100), OrderPage),
            _pages(requester, lambda offset: ListPayments(offset=offset, limit=500), PaymentPage),
            _pages(requester, lambda offset: ListStock(offset=offset, limit=500), StockPage),
            SimulatorControl(provider).ledger(),
            dead_letter_queues(settings),
        )
        limit = asyncio.Semaphore(_CONCURRENCY)
        followed = await asyncio.gather(
            *(_shipping_and_notifications(requester, order.order_id, limit) for order in orders)
        )
    by_order = dict(zip((order.order_id for order in orders), followed, strict=True))
    return Facts(
        orders=order_facts(orders, payments, ledger, by_order),
        skus=sku_facts(stock, orders),
        # Unrouted events are no failed work: an event published while its subscriber (the edge's
        # saga stream, say) was away. They have their own alert (EventsUnrouted).
        dead_letter_queues=[queue for queue in dead_letters if queue.name != UNROUTED_EVENTS.name],
    )


async def check(
    settings: Settings, *, grace: timedelta = timedelta(seconds=30), drained: bool = False
) -> Report:
    """Every invariant; ``drained``: the system is quiet, so those that need it are checked too."""
    facts = await gather_facts(settings)
    settle_by = datetime.now(UTC) - timedelta(milliseconds=settings.emporium_order_deadline_ms) - grace
    return evaluate(facts, When(settle_by=settle_by, drained=drained))


# --- display -------------------------------------------------------------------------------------


def print_report(report: Report, console: Console) -> None:
    """The invariants with what each checked and found, then every violation."""
    drained = ", drained" if report.drained else ""
    orders = f"{report.orders} orders ({report.in_flight} in flight)"
    console.print(f"{orders}, {report.skus} SKUs checked{drained}")
    tallies = Table("invariant", "checked", "violated")
    for tally in report.tallies():
        checked = "needs --drained" if tally.checked is None else str(tally.checked)
        style = "red" if tally.violated else "dim" if tally.checked is None else None
        tallies.add_row(tally.invariant, checked, str(tally.violated), style=style)
    console.print(tallies)
    if report.clean:
        console.print("[green]no invariant is violated[/green]")
        return
    violations = Table("invariant", "where", "what")
    for v in report.violations:
        violations.add_row(Text(v.invariant), Text(v.subject), Text(v.detail))  # Text: no markup from data
    console.print(violations)
