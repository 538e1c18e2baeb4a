"""The orders actor: event-sourced orders, moved along the saga by the facts other actors announce.

Every handler loads the order's stream, lets a pure decision (``domain``) say what happens, and
appends that at the next version together with the order's view, in the runtime's transaction.
Two handlers deciding on the same order at once both aim at the same version: MongoDB lets one
commit; the other is run again from a fresh read (a write conflict inside the transaction) or, if
it ever gets as far as the unique index, fails with ConcurrentUpdate and is retried. Either way it
decides again on the order as it now is, so nothing is applied twice.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from actors.orders import domain
from actors.orders.store import OrdersStore
from actors.runtime.actor import Actor, Timer, Work
from actors.runtime.errors import NotFound
from brokers import pricing
from brokers.contracts.catalog import ProductCreated, ProductPriceChanged
from brokers.contracts.inventory import StockRejected, StockReserved
from brokers.contracts.orders import (
    CancelOrder,
    ExpireOrder,
    GetOrder,
    ListOrders,
    OrderPage,
    OrderQuote,
    OrderView,
    PlaceOrder,
    QuoteOrder,
)
from brokers.contracts.payments import PaymentCaptured, PaymentFailed
from brokers.contracts.shipping import ShipmentDelivered, ShipmentDispatched, ShipmentStopped

NAME = "orders"
# An order not confirmed by then is cancelled ("timeout").
DEADLINE = Timer("deadline", lambda settings: settings.emporium_order_deadline_ms)
orders = Actor(NAME, OrdersStore, timers=(DEADLINE,))


@orders.handles(PlaceOrder)
async def place_order(command: PlaceOrder, work: Work[OrdersStore]) -> None:
    existing = await work.store.order(command.order_id)
    prices = await work.store.prices(line.sku for line in command.lines)
    if await _record(work, command.order_id, existing, domain.place(existing, command, prices)):
        work.schedule(ExpireOrder(order_id=command.order_id), DEADLINE)


@orders.handles(StockReserved)
async def mark_reserved(event: StockReserved, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, domain.reserve)


@orders.handles(StockRejected)
async def cancel_out_of_stock(event: StockRejected, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, domain.reject_stock)


@orders.handles(PaymentCaptured)
async def confirm(event: PaymentCaptured, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, lambda order: domain.confirm(order, event))


@orders.handles(PaymentFailed)
async def cancel_unpaid(event: PaymentFailed, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, lambda order: domain.fail_payment(order, event.reason))


@orders.handles(ExpireOrder)
async def expire(command: ExpireOrder, work: Work[OrdersStore]) -> None:
    await _decide(work, command.order_id, domain.expire)


@orders.handles(CancelOrder)
async def cancel_for_customer(command: CancelOrder, work: Work[OrdersStore]) -> None:
    await _decide(work, command.order_id, lambda order: domain.cancel_by_customer(order, command.customer_id))


@orders.handles(ShipmentStopped)
async def cancel_stopped(event: ShipmentStopped, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, domain.cancel_stopped)


@orders.handles(ShipmentDispatched)
async def mark_shipped(event: ShipmentDispatched, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, lambda order: domain.ship(order, event))


@orders.handles(ShipmentDelivered)
async def mark_delivered(event: ShipmentDelivered, work: Work[OrdersStore]) -> None:
    await _decide(work, event.order_id, lambda order: domain.deliver(order, event))


@orders.handles(ProductCreated)
async def learn_price(event: ProductCreated, work: Work[OrdersStore]) -> None:
    await _keep_price(work, event)


@orders.handles(ProductPriceChanged)
async def learn_new_price(event: ProductPriceChanged, work: Work[OrdersStore]) -> None:
    await _keep_price(work, event)


async def _keep_price(work: Work[OrdersStore], event: ProductCreated | ProductPriceChanged) -> None:
    offered = pricing.Price(event.sku, event.price_cents, event.currency, as_of=work.envelope.occurred_at)
    current = (await work.store.prices([event.sku])).get(event.sku)
    if pricing.newer(offered, current):
        await work.store.save_price(offered)


async def _decide(
    work: Work[OrdersStore], order_id: str, decide: Callable[[domain.Order], domain.Decision]
) -> None:
    order = await work.store.order(order_id)
    if order is None:
        # Transient in a handler: the order's placing may not have committed yet.
        raise NotFound(f"order {order_id} does not exist")
    await _record(work, order_id, order, decide(order))


async def _record(
    work: Work[OrdersStore], order_id: str, order: domain.Order | None, events: domain.Decision
) -> bool:
    """Append what was decided, refresh the view, announce it; False when nothing was decided."""
    if not events:
        return False
    recorded, after = domain.record(order, order_id, events, at=datetime.now(UTC))
    await work.store.append(recorded, message_id=work.envelope.message_id)
    await work.store.save_view(after.view())
    for entry in recorded:
        if (public := domain.announcement(after, entry.event)) is not None:
            work.emit(public)
    return True


@orders.answers_to(GetOrder)
async def get_order(query: GetOrder, store: OrdersStore) -> OrderView:
    return await store.view(query.order_id)


@orders.answers_to(QuoteOrder)
async def quote_order(query: QuoteOrder, store: OrdersStore) -> OrderQuote:
    return domain.priced(query.lines, await store.prices(line.sku for line in query.lines))


@orders.answers_to(ListOrders)
async def list_orders(query: ListOrders, store: OrdersStore) -> OrderPage:
    views, total = await store.views_of(query.customer_id, offset=query.offset, limit=query.limit)
    return OrderPage(items=views, total=total, offset=query.offset, limit=query.limit)
