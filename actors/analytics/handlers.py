"""The analytics actor: projections over the order and payment events, read in one query.

One handler follows every event: it updates the order's facts and the counters by what changed
(see ``domain``), in the runtime's transaction, so GetStats only reads counters and a few indexed
documents however many orders there are.
"""

from actors.analytics import domain
from actors.analytics.store import AnalyticsStore
from actors.runtime.actor import Actor, Work
from brokers.contracts.analytics import GetStats, Stats
from brokers.contracts.orders import OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded

analytics = Actor("analytics", AnalyticsStore)
Followed = (
    OrderPlaced
    | OrderConfirmed
    | OrderCancelled
    | OrderShipped
    | OrderDelivered
    | PaymentCaptured
    | PaymentRefunded
    | PaymentFailed
)


@analytics.handles(OrderPlaced)
@analytics.handles(OrderConfirmed)
@analytics.handles(OrderCancelled)
@analytics.handles(OrderShipped)
@analytics.handles(OrderDelivered)
@analytics.handles(PaymentCaptured)
@analytics.handles(PaymentRefunded)
@analytics.handles(PaymentFailed)
async def follow(event: Followed, work: Work[AnalyticsStore]) -> None:
    before = await work.store.facts(event.order_id)
    after = domain.observe(event, before, work.envelope.occurred_at)
    if after != before:
        await work.store.record(before, after, work.envelope.occurred_at)


@analytics.answers_to(GetStats)
async def get_stats(query: GetStats, store: AnalyticsStore) -> Stats:
    return await store.stats(top=query.top)
