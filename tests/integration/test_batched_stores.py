"""Stores in a batch (Store.preload and Store.flush) on the real MongoDB, counting round trips.

One store serves every handler of a batch: it reads what the batch is about in a round trip or two
and writes once at the end, and each handler still sees what the ones before it wrote. A flush
that fails is narrowed down to its message, the others committing once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from actors.analytics import analytics
from actors.analytics.handlers import get_stats
from actors.inventory import inventory
from actors.notifications import notifications
from actors.orders import orders
from actors.payments import payments
from actors.runtime.actor import Actor, Work
from actors.runtime.batches import Delivery, GroupCommit, Outcome
from actors.runtime.errors import RuleViolation
from actors.runtime.host import topology_of
from actors.runtime.outbox import OutboxRelay, applied_messages, outbox_entries
from actors.runtime.store import Store
from actors.shipping import shipping
from brokers.contracts.analytics import GetStats
from brokers.contracts.common import EntityId, Line
from brokers.contracts.identity import UserRegistered
from brokers.contracts.inventory import Restock, StockReserved
from brokers.contracts.orders import CancelOrder, OrderCancelled, OrderConfirmed, PlaceOrder
from brokers.contracts.payments import PaymentCaptured, PaymentRefunded
from brokers.contracts.shipping import AdvanceShipment
from brokers.envelope import Command, Envelope, Message
from brokers.settings import Settings
from ops.payment_provider import served
from tests.integration.support import order_placed, product_created


class Commands(monitoring.CommandListener):
    """The commands a client sends (a round trip each), as (command, collection)."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.seen[event.command_name, target if isinstance(target, str) else ""] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Counted when started."""


class Batches:
    """One actor's group commit on the test's database, without a broker (nothing is published)."""

    def __init__(
        self,
        actor: Actor[Any],
        client: AsyncMongoClient,
        commands: Commands,
        settings: Settings,
        db: str = "",
    ):
        self.actor, self.commands = actor, commands
        self.seen: Counter[tuple[str, str]] = Counter()
        self.db = client[db or settings.database_name(actor.name)]
        self.commits = GroupCommit(actor, topology_of(actor, settings), client, self.db, None, settings)

    async def prepare(self) -> None:
        await OutboxRelay.prepare(self.db, self.commits.settings)
        await self.actor.store.prepare(self.db)

    async def apply(self, *messages: Message) -> list[Outcome]:
        """The messages in one batch; ``seen`` then counts the commands of this batch only."""
        deliveries = [
            Delivery(Envelope.first(m, getattr(m, "order_id", "c-batch")), m, self.actor.handlers[m.TYPE][1])
            for m in messages
        ]
        self.commands.seen.clear()
        outcomes = await self.commits.commit(deliveries)
        self.seen = Counter(self.commands.seen)
        return outcomes


@pytest.fixture
async def counted(settings, mongo) -> AsyncIterator[tuple[AsyncMongoClient, Commands]]:
    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongodb_url, tz_aware=True, event_listeners=[commands]
    )
    yield client, commands
    await client.close()


async def batches_of(actor: Actor[Any], counted, settings, db: str = "") -> Batches:
    client, commands = counted
    batches = Batches(actor, client, commands, settings, db)
    await batches.prepare()
    return batches


def placing(order_id: str, *lines: tuple[str, int]) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        customer_id="customer-1",
        lines=[Line(sku=sku, quantity=quantity) for sku, quantity in lines],
        request_digest=f"digest of {order_id}",
    )


def all_applied(outcomes: list[Outcome]) -> bool:
    return all(isinstance(outcome, Work) for outcome in outcomes)


async def test_a_batch_of_orders_reads_their_streams_once_and_writes_them_once(counted, settings):
    batches = await batches_of(orders, counted, settings)
    order_ids = [f"o-batch-{n}" for n in range(8)]
    assert all_applied(
        await batches.apply(product_created("SKU-B"), *(placing(o, ("SKU-B", 1)) for o in order_ids))
    )

    outcomes = await batches.apply(
        *(StockReserved(order_id=o, lines=[Line(sku="SKU-B", quantity=1)]) for o in order_ids)
    )

    assert all_applied(outcomes), outcomes
    seen = batches.seen
    assert seen["find", "order_events"] == 1, seen
    assert seen["insert", "order_events"] == 1 and seen["update", "orders"] == 1, seen
    assert seen["commitTransaction", ""] == 1, seen
    views = await batches.db["orders"].find({}, {"status": 1}).to_list()
    assert sorted((v["_id"], v["status"]) for v in views) == [(o, "reserved") for o in order_ids]


async def test_messages_about_one_order_in_one_batch_each_see_what_the_one_before_wrote(counted, settings):
    batches = await batches_of(orders, counted, settings)
    assert all_applied(await batches.apply(product_created("SKU-S")))

    outcomes = await batches.apply(
        placing("o-same", ("SKU-S", 2)),
        StockReserved(order_id="o-same", lines=[Line(sku="SKU-S", quantity=2)]),
        CancelOrder(order_id="o-same", customer_id="customer-1"),
    )

    assert all_applied(outcomes), outcomes
    stream = await batches.db["order_events"].find({"order_id": "o-same"}).sort("version", 1).to_list()
    assert [(e["version"], e["type"]) for e in stream] == [(1, "placed"), (2, "reserved"), (3, "cancelled")]
    view = await batches.db["orders"].find_one({"_id": "o-same"})
    assert view is not None and view["status"] == "cancelled"
    assert len(await outbox_entries(batches.db, routing_key="order.cancelled")) == 1


async def test_a_batch_on_one_hot_sku_reserves_in_delivery_order_and_writes_the_level_once(counted, settings):
    batches = await batches_of(inventory, counted, settings)
    assert all_applied(await batches.apply(product_created("SKU-HOT"), Restock(sku="SKU-HOT", quantity=5)))

    outcomes = await batches.apply(*(order_placed(f"o-hot-{n}", ("SKU-HOT", 1)) for n in range(8)))

    assert all_applied(outcomes), outcomes
    emitted = [work.staged[0].message.TYPE for work in outcomes if isinstance(work, Work)]
    assert emitted == ["stock.reserved"] * 5 + ["stock.rejected"] * 3
    level = await batches.db["stock"].find_one({"_id": "SKU-HOT"})
    assert level is not None and (level["on_hand"], level["reserved"], level["received"]) == (0, 5, 5)
    seen = batches.seen
    assert seen["update", "stock"] == 1 and seen["find", "stock"] == 1, seen
    assert seen["find", "reservations"] == 1 and seen["update", "reservations"] == 1, seen


def paid_order(order_id: str, *, refunded: bool) -> list[Message]:
    """An order's events as analytics follows them: placed, paid, confirmed, maybe cancelled, refunded."""
    placed = order_placed(order_id, ("SKU-A", 2), ("SKU-B", 1))
    paid: dict[str, Any] = {"payment_id": f"pay-{order_id}", "order_id": order_id}
    paid |= {"customer_id": placed.customer_id, "amount_cents": placed.total_cents, "currency": "EUR"}
    events: list[Message] = [
        placed,
        PaymentCaptured(**paid, provider_reference=f"ref-{order_id}"),
        confirmed(order_id),
    ]
    if refunded:
        events += [
            OrderCancelled(order_id=order_id, customer_id=placed.customer_id, reason="customer"),
            PaymentRefunded(**paid),
        ]
    return events


async def test_a_batch_of_analytics_events_counts_what_they_count_one_at_a_time(counted, settings):
    one_by_one = await batches_of(analytics, counted, settings)
    batched = await batches_of(analytics, counted, settings, db=settings.database_name("analytics-batched"))
    events = [e for n in range(6) for e in paid_order(f"o-stats-{n}", refunded=n % 3 == 0)]

    for event in events:
        assert all_applied(await one_by_one.apply(event))
    assert all_applied(await batched.apply(*events))

    seen = batched.seen
    assert seen["find", "orders"] == 1 and seen["insert", "orders"] == 1, seen
    assert seen["update", "counters"] == 1, seen
    query = GetStats(top=5)
    singly = await get_stats(query, analytics.store(one_by_one.db))
    together = await get_stats(query, analytics.store(batched.db))
    # Times differ (each event is stamped as it is sent); every count and sum is the same.
    timed = {"saga_seconds", "as_of"}
    assert together.model_dump(exclude=timed) == singly.model_dump(exclude=timed)
    assert together.saga_seconds.count == singly.saga_seconds.count == 6
    assert singly.revenue_cents == 4 * 3_000 and singly.refunded_cents == 2 * 3_000


def confirmed(order_id: str, customer_id: str = "customer-1") -> OrderConfirmed:
    placed = order_placed(order_id, ("SKU-A", 2), ("SKU-B", 1))
    return OrderConfirmed(
        order_id=order_id,
        customer_id=customer_id,
        lines=placed.lines,
        total_cents=placed.total_cents,
        currency=placed.currency,
    )


async def test_a_batch_of_shipments_reads_them_once_and_writes_them_once(counted, settings):
    batches = await batches_of(shipping, counted, settings)
    order_ids = [f"o-ship-{n}" for n in range(6)]
    assert all_applied(await batches.apply(*(confirmed(o) for o in order_ids)))
    assert batches.seen["insert", "shipments"] == 1, batches.seen

    # Dispatched twice in one batch (the carrier's step and a webhook): the second changes nothing.
    twice = [AdvanceShipment(order_id=o, to="dispatched") for o in order_ids]
    outcomes = await batches.apply(*twice, *twice[:2])

    assert all_applied(outcomes), outcomes
    seen = batches.seen
    assert seen["find", "shipments"] == 1 and seen["update", "shipments"] == 1, seen
    shipments = await batches.db["shipments"].find().sort("_id").to_list()
    assert [(s["_id"], s["version"], s["history"][-1]["status"]) for s in shipments] == [
        (o, 2, "dispatched") for o in order_ids
    ]
    dispatched = await outbox_entries(batches.db, routing_key="shipment.dispatched")
    assert len(dispatched) == len(order_ids)


async def test_a_batch_of_notifications_reads_once_and_writes_its_new_notifications_once(counted, settings):
    batches = await batches_of(notifications, counted, settings)
    customers = {"c-ann": "ann@example.com", "c-bob": "bob@example.com"}
    registered = [UserRegistered(user_id=c, email=e, name=c) for c, e in customers.items()]
    assert all_applied(await batches.apply(*registered))

    orders_of = [(f"o-note-{n}", "c-ann" if n % 2 else "c-bob") for n in range(6)]
    outcomes = await batches.apply(*(confirmed(o, customer_id=c) for o, c in orders_of))

    assert all_applied(outcomes), outcomes
    assert batches.seen["find", "emails"] == 1, batches.seen
    assert batches.seen["find", "notifications"] == 1, batches.seen
    assert batches.seen["insert", "notifications"] == 1, batches.seen
    assert batches.seen["update", "notifications"] == 0, batches.seen
    about_orders = {"order_id": {"$ne": None}}  # not the welcomes
    sent = await batches.db["notifications"].find(about_orders, {"order_id": 1, "address": 1}).to_list()
    assert sorted((n["order_id"], n["address"]) for n in sent) == sorted(
        (o, customers[c]) for o, c in orders_of
    )


async def test_a_notification_told_before_or_twice_in_one_batch_is_stored_and_announced_once(
    counted, settings
):
    batches = await batches_of(notifications, counted, settings)
    assert all_applied(await batches.apply(UserRegistered(user_id="c-cy", email="cy@example.com", name="Cy")))
    assert all_applied(await batches.apply(confirmed("o-told-1", customer_id="c-cy")))

    # The same facts published again under other message ids: one told before, one twice at once.
    outcomes = await batches.apply(
        confirmed("o-told-1", customer_id="c-cy"),
        confirmed("o-told-2", customer_id="c-cy"),
        confirmed("o-told-2", customer_id="c-cy"),
    )

    assert all_applied(outcomes), outcomes
    announced = [len(work.outbox) for work in outcomes if isinstance(work, Work)]
    assert announced == [0, 1, 0]
    stored = await batches.db["notifications"].find({"customer_id": "c-cy"}, {"order_id": 1}).to_list()
    assert sorted(n.get("order_id") for n in stored if n.get("order_id")) == ["o-told-1", "o-told-2"]


async def test_two_replicas_telling_one_fact_at_once_store_and_announce_it_once(counted, settings):
    # Each batch reads that the notification is not stored yet, then holds its insert for the flush:
    # the one that commits second fails on the unique id, is applied again and finds it stored.
    replicas = [await batches_of(notifications, counted, settings) for _ in range(2)]
    assert all_applied(await replicas[0].apply(UserRegistered(user_id="c-di", email="di@x.org", name="Di")))

    outcomes = await asyncio.gather(
        *(replica.apply(confirmed("o-rival", customer_id="c-di")) for replica in replicas)
    )

    works = [work for batch in outcomes for work in batch]
    assert all(isinstance(work, Work) for work in works), works
    assert sorted(len(work.outbox) for work in works if isinstance(work, Work)) == [0, 1]
    db = replicas[0].db
    assert await db["notifications"].count_documents({"order_id": "o-rival"}) == 1
    assert len(await outbox_entries(db, routing_key="notification.sent")) == 2  # welcome too


async def test_a_batch_of_payments_reads_the_accounts_once_and_writes_them_once(counted, settings):
    async with served() as simulator:
        charging = settings.model_copy(update={"emporium_payment_provider_url": simulator.url})
        batches = await batches_of(payments, counted, charging)
        order_ids = [f"o-pay-{n}" for n in range(6)]
        assert all_applied(await batches.apply(*(order_placed(o, ("SKU-A", 2)) for o in order_ids)))
        # One read for the steps outside the transaction, one inside it.
        assert batches.seen["find", "accounts"] == 2 and batches.seen["update", "accounts"] == 1

        reserved = [StockReserved(order_id=o, lines=[Line(sku="SKU-A", quantity=2)]) for o in order_ids]
        outcomes = await batches.apply(*reserved)

    assert all_applied(outcomes), outcomes
    seen = batches.seen
    assert seen["find", "accounts"] == 2 and seen["update", "accounts"] == 1, seen
    accounts = await batches.db["accounts"].find().sort("_id").to_list()
    assert [(a["_id"], a["payment"]["status"]) for a in accounts] == [(o, "captured") for o in order_ids]
    captured = await outbox_entries(batches.db, routing_key="payment.captured")
    assert len(captured) == len(order_ids)


class Tally(Command, type="test.tally"):
    name: EntityId


class TallyStore(Store):
    """Names held back until the flush, which refuses a poisoned one."""

    async def preload(self, messages: Any) -> None:
        self.held: list[str] = []

    async def flush(self) -> None:
        if "poison" in self.held:
            raise RuleViolation("the flush refuses a poisoned tally")
        await self.db["tally"].insert_many([{"_id": name} for name in self.held], session=self.session)


tallies = Actor("tallies", TallyStore)


@tallies.handles(Tally)
async def hold_name(command: Tally, work: Work[TallyStore]) -> None:
    work.store.held.append(command.name)


async def test_a_flush_that_fails_is_narrowed_down_to_its_message_and_the_others_commit_once(
    counted, settings
):
    batches = await batches_of(tallies, counted, settings)
    names = ["a", "b", "c", "poison", "d", "e", "f"]

    outcomes = await batches.apply(*(Tally(name=name) for name in names))

    assert [type(o).__name__ for o in outcomes] == ["Work"] * 3 + ["RuleViolation"] + ["Work"] * 3
    assert sorted(doc["_id"] for doc in await batches.db["tally"].find().to_list()) == [
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
    ]
    assert len(await applied_messages(batches.db)) == 6
