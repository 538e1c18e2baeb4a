"""The payments actor: charges an order once its stock is reserved, refunds it if it is cancelled.

order.placed and stock.reserved come from different actors and may be handled in either order, even
at the same moment: the order is charged by whichever of the two handlers finds the other's fact.

The provider is called inside the handler's transaction; a re-run (a transaction retry, a redelivery)
calls it again with the same idempotency key and gets the same answer, so nobody is charged twice.
A provider that is unavailable makes the handler raise, and the message waits in the runtime's delay
queues; on its last retry the payment fails as "unavailable" instead (the order is then cancelled
and its stock released). Counting tries rather than time since the event keeps a backlog in front
of payments from using up a payment's patience before the provider was asked even once.

A cancelled order is never charged, whichever handler comes after the cancel. Where its charge may
have been taken unbeknown to payments, the provider is asked what it holds under the order's key (a
lookup, which takes nothing), and a capture found is recorded and refunded at once. Every handler of
an order reads and writes its one account in its transaction, so across replicas too a charge in
flight when the cancel commits conflicts, runs again on the cancelled account, looks up and refunds
what it took. Lookups and refunds never give up: a provider unavailable for them makes the handler
raise through every retry into the dead-letter queue, for an operator to replay.
"""

from datetime import UTC, datetime

from actors.payments import domain, provider
from actors.payments.store import PaymentsStore
from actors.runtime.actor import Actor, Work
from brokers.contracts.inventory import StockReserved
from brokers.contracts.orders import OrderCancelled, OrderPlaced
from brokers.contracts.payments import GetPayment, ListPayments, PaymentPage, PaymentView

# The provider is called inside the transaction: one message per transaction keeps it inside the
# transaction lifetime (15 s on the embedded MongoDB, recommended for production) however slow the
# provider (3 attempts of 2 s), and 16 lanes keep 16 orders' calls going at once. Every handler decides
# about one order's account only, so lanes (by order id) cannot conflict.
payments = Actor("payments", PaymentsStore, lanes=16, batch_size=lambda settings: 1)


def _now() -> datetime:
    return datetime.now(UTC)


@payments.handles(OrderPlaced)
async def remember_order(event: OrderPlaced, work: Work[PaymentsStore]) -> None:
    order = domain.Order(event.order_id, event.customer_id, event.total_cents, event.currency)
    await _charge_or_look_up(work, domain.placed(await work.store.account(event.order_id), order, _now()))


@payments.handles(StockReserved)
async def charge_reserved_order(event: StockReserved, work: Work[PaymentsStore]) -> None:
    account = domain.reserved(await work.store.account(event.order_id), event.order_id, _now())
    await _charge_or_look_up(work, account)


@payments.handles(OrderCancelled)
async def refund_cancelled_order(event: OrderCancelled, work: Work[PaymentsStore]) -> None:
    account = domain.cancelled(await work.store.account(event.order_id), event.order_id, _now())
    await _charge_or_look_up(work, account)


async def _charge_or_look_up(work: Work[PaymentsStore], account: domain.Account) -> None:
    """Charge what is due; for a cancelled order, look up instead what it may have been charged."""
    change = domain.Change(account)
    if (charge := domain.charge_due(account)) is not None:
        change = domain.charged(account, await _charge(charge, work), _now())
    elif (key := domain.lookup_due(account)) is not None:
        found = await provider.client_for(work.settings).lookup(key)
        if found is not None:  # nothing found: nothing was taken, nothing changes
            change = domain.charged(account, found, _now())
    await _settle(work, change)


async def _charge(charge: domain.ChargeRequest, work: Work[PaymentsStore]) -> domain.ChargeOutcome:
    client = provider.client_for(work.settings)
    try:
        return await client.charge(charge)
    except provider.ProviderUnavailable as exc:
        if work.retries_left:
            raise
        return domain.Unavailable(str(exc), exc.attempts)


async def _settle(work: Work[PaymentsStore], change: domain.Change) -> None:
    """Refund what a cancelled order was charged, then save the account and emit what happened."""
    refund = domain.refund_due(change.account)
    if refund is not None:
        refund_id = await provider.client_for(work.settings).refund(refund)
        change = change.then(domain.refunded(change.account, refund_id, _now()))
    await work.store.save(change.account)
    for event in change.events:
        work.emit(event)


@payments.answers_to(GetPayment)
async def get_payment(query: GetPayment, store: PaymentsStore) -> PaymentView:
    return domain.view(query.order_id, await store.account(query.order_id))


@payments.answers_to(ListPayments)
async def list_payments(query: ListPayments, store: PaymentsStore) -> PaymentPage:
    accounts, total = await store.page(offset=query.offset, limit=query.limit)
    views = [domain.view(account.order_id, account) for account in accounts]
    return PaymentPage(items=views, total=total, offset=query.offset, limit=query.limit)
