"""The payments actor: charges an order once its stock is reserved, refunds it if it is cancelled.

order.placed and stock.reserved come from different actors and may be handled in either order, even
at the same moment: the order is charged by whichever of the two handlers finds the other's fact.

The provider is never called inside a transaction: each handler's outside step (``ask_provider``)
applies the message's fact to the committed account and asks what is then due, and the handler
applies the fact again in its transaction and records the answers (domain.settle). A re-run (a
redelivery, a handler asked again) asks again with the same idempotency key and gets the same
answer, so nobody is charged twice. A provider that is unavailable makes the outside step raise,
and the message waits in the runtime's delay queues; on its last retry the payment fails as
"unavailable" instead (the order is then cancelled and its stock released). Counting tries rather
than time since the event keeps a backlog in front of payments from using up a payment's patience
before the provider was asked even once.

A cancelled order is never charged, whichever handler comes after the cancel. Where its charge may
have been taken unbeknown to payments, the provider is asked what it holds under the order's key (a
lookup, which takes nothing), and a capture found is recorded and refunded at once. Lookups and
refunds never give up: a provider unavailable for them makes the step raise through every retry into
the dead-letter queue, for an operator to replay.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from actors.payments import domain, provider
from actors.payments.store import PaymentsStore
from actors.runtime.actor import Actor, Asking, Work
from brokers.contracts.inventory import StockReserved
from brokers.contracts.orders import OrderCancelled, OrderPlaced
from brokers.contracts.payments import GetPayment, ListPayments, PaymentPage, PaymentView

# The provider is called outside the transactions, a batch's orders side by side; in 4 lanes (by
# order id), so that one batch waits on the provider while another commits.
payments = Actor("payments", PaymentsStore, lanes=4)
Fact = Callable[[domain.Account | None, datetime], domain.Account]


def _now() -> datetime:
    return datetime.now(UTC)


def _fact(event: OrderPlaced | StockReserved | OrderCancelled) -> Fact:
    """What the event tells of its order's account."""
    match event:
        case OrderPlaced():
            order = domain.Order(event.order_id, event.customer_id, event.total_cents, event.currency)
            return lambda account, at: domain.placed(account, order, at)
        case StockReserved():
            return lambda account, at: domain.reserved(account, event.order_id, at)
        case OrderCancelled():
            return lambda account, at: domain.cancelled(account, event.order_id, at)


async def ask_provider(
    event: OrderPlaced | StockReserved | OrderCancelled, asking: Asking[PaymentsStore]
) -> domain.Asked:
    """Charge what the event makes due, or look up what a cancelled order may have been charged;
    then refund a capture of a cancelled order."""
    account = _fact(event)(await asking.store.account(event.order_id), _now())
    client = provider.client_for(asking.settings)
    asked = domain.Asked()
    if (charge := domain.charge_due(account)) is not None:
        asked = domain.Asked(key_asked=True, answer=await _charge(client, charge, asking.retries_left))
    elif (key := domain.lookup_due(account)) is not None:
        asked = domain.Asked(key_asked=True, answer=await client.lookup(key))
    if (refund := domain.refund_due(domain.after_answer(account, asked.answer, _now()).account)) is not None:
        asked = domain.Asked(asked.key_asked, asked.answer, refund_id=await client.refund(refund))
    return asked


async def _charge(
    client: provider.ProviderClient, charge: domain.ChargeRequest, retries_left: bool
) -> domain.ChargeOutcome:
    try:
        return await client.charge(charge)
    except provider.ProviderUnavailable as exc:
        if retries_left:
            raise
        return domain.Unavailable(str(exc), exc.attempts)


@payments.handles(OrderPlaced, asks=ask_provider)
async def remember_order(event: OrderPlaced, work: Work[PaymentsStore]) -> None:
    await _record(event, work)


@payments.handles(StockReserved, asks=ask_provider)
async def charge_reserved_order(event: StockReserved, work: Work[PaymentsStore]) -> None:
    await _record(event, work)


@payments.handles(OrderCancelled, asks=ask_provider)
async def refund_cancelled_order(event: OrderCancelled, work: Work[PaymentsStore]) -> None:
    await _record(event, work)


async def _record(event: OrderPlaced | StockReserved | OrderCancelled, work: Work[PaymentsStore]) -> None:
    """Apply the event's fact to the account as it now stands, with what the provider answered."""
    account = _fact(event)(await work.store.account(event.order_id), _now())
    change = domain.settle(account, work.asked, _now())
    await work.store.save(change.account)
    for emitted in change.events:
        work.emit(emitted)


@payments.answers_to(GetPayment)
async def get_payment(query: GetPayment, store: PaymentsStore) -> PaymentView:
    return domain.view(query.order_id, await store.account(query.order_id))


@payments.answers_to(ListPayments)
async def list_payments(query: ListPayments, store: PaymentsStore) -> PaymentPage:
    accounts, total = await store.page(offset=query.offset, limit=query.limit)
    views = [domain.view(account.order_id, account) for account in accounts]
    return PaymentPage(items=views, total=total, offset=query.offset, limit=query.limit)
