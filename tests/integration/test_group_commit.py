"""Group commit (actors.runtime.batches) on the real RabbitMQ and MongoDB.

Many messages share one transaction, and one of them must never fail, block, lose or double-apply
the others: a message whose handler raises leaves the batch (to be retried or dead-lettered on its
own) and the rest are applied again without it; copies of a message applied before are recognised
by the inbox; messages about one entity are applied in the order they came.
"""

from __future__ import annotations

import asyncio
import zlib
from datetime import datetime
from typing import Any

import pytest

from actors.inventory import inventory
from actors.runtime import metrics
from actors.runtime.actor import Actor, Work
from actors.runtime.batches import Delivery, GroupCommit
from actors.runtime.errors import RuleViolation
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.outbox import INBOX_EXPIRY, OutboxRelay, applied_among, applied_messages
from actors.runtime.store import Store
from brokers.contracts.common import EntityId
from brokers.contracts.inventory import GetStock, Restock, StockReserved, StockView
from brokers.contracts.shipping import ShipmentDispatched
from brokers.deadletters import ATTEMPTS, ORIGIN, REASON
from brokers.envelope import Command, Envelope, Message
from brokers.factory import publish
from brokers.settings import Settings
from brokers.topology import dlq_name
from tests.helpers import Tap, eventually, send
from tests.integration.support import (
    amqp,
    dead_letter_headers,
    order_placed,
    outcome_count,
    product_created,
    requester,
    running,
)


class Inventory:
    """Inventory's group commit on the test's database, without a broker: nothing is published."""

    def __init__(self, mongo: Any, settings: Settings) -> None:
        self.db = mongo[settings.database_name("inventory")]
        self.commits = GroupCommit(
            inventory, topology_of(inventory, settings), mongo, self.db, None, settings
        )
        self.runs: dict[str, int] = {}

    async def prepare(self) -> None:
        await OutboxRelay.prepare(self.db, self.commits.settings)
        await inventory.store.prepare(self.db)

    def delivery(
        self, message: Message, envelope: Envelope | None = None, *, handler: Any = None
    ) -> Delivery:
        """A delivery of the message, its handler counting how often it runs."""
        envelope = envelope or Envelope.first(message, "c-batch")
        applies = handler or inventory.handlers[message.TYPE][1]

        async def counted(payload: Any, work: Work[Any]) -> None:
            self.runs[envelope.message_id] = self.runs.get(envelope.message_id, 0) + 1
            await applies(payload, work)

        return Delivery(envelope, message, counted)

    async def level(self, sku: str) -> dict[str, Any]:
        return await self.db["stock"].find_one({"_id": sku}, {"_id": 0, "on_hand": 1, "reserved": 1})


@pytest.fixture
async def stocked(mongo, settings) -> Inventory:
    inv = Inventory(mongo, settings)
    await inv.prepare()
    await inv.commits.commit(
        [inv.delivery(product_created("SKU-G")), inv.delivery(Restock(sku="SKU-G", quantity=10))]
    )
    return inv


async def poison(payload: Any, work: Work[Any]) -> None:
    await work.store.add_sku("SKU-POISON", "p-poison")  # written, then rolled back with the rest
    raise RuleViolation("this message breaks a rule")


async def test_a_poison_message_leaves_its_batch_and_the_others_commit_once(stocked):
    first, second, third = (stocked.delivery(Restock(sku="SKU-G", quantity=q)) for q in (1, 2, 4))
    bad = stocked.delivery(Restock(sku="SKU-G", quantity=100), handler=poison)
    redone_before = metrics.BATCHES_REDONE.labels("inventory")._value.get()

    outcomes = await stocked.commits.commit([first, second, bad, third])

    assert [type(o).__name__ for o in outcomes] == ["Work", "Work", "RuleViolation", "Work"]
    # The first two ran in the aborted attempt too, yet count once; the poison's write is gone.
    assert stocked.runs[first.envelope.message_id] == 2 and stocked.runs[third.envelope.message_id] == 1
    assert await stocked.level("SKU-G") == {"on_hand": 10 + 1 + 2 + 4, "reserved": 0}
    assert await stocked.db["stock"].find_one({"_id": "SKU-POISON"}) is None
    inbox = {message["message_id"] for message in await applied_messages(stocked.db)}
    assert {d.envelope.message_id for d in (first, second, third)} <= inbox
    assert bad.envelope.message_id not in inbox
    assert metrics.BATCHES_REDONE.labels("inventory")._value.get() == redone_before + 1


async def test_messages_about_one_sku_are_applied_in_the_order_they_came(mongo, settings):
    inv = Inventory(mongo, settings)
    await inv.prepare()
    # Reserving before the restock would find no stock: the order is only served in this order.
    outcomes = await inv.commits.commit(
        [
            inv.delivery(product_created("SKU-O")),
            inv.delivery(Restock(sku="SKU-O", quantity=3)),
            inv.delivery(order_placed("order-in-order", ("SKU-O", 3))),
        ]
    )

    placed = outcomes[2]
    assert isinstance(placed, Work)
    assert [type(event) for event, _ in placed.emitted] == [StockReserved]
    assert await inv.level("SKU-O") == {"on_hand": 0, "reserved": 3}


async def test_copies_of_a_message_in_one_batch_or_applied_before_apply_once(stocked):
    restock = Restock(sku="SKU-G", quantity=5)
    envelope = Envelope.first(restock, "c-copies")
    [applied] = await stocked.commits.commit([stocked.delivery(restock, envelope)])

    # A redelivery of it beside a new message and two copies of another, in one batch.
    other = Envelope.first(Restock(sku="SKU-G", quantity=7), "c-copies")
    outcomes = await stocked.commits.commit(
        [
            stocked.delivery(restock, envelope),
            stocked.delivery(Restock(sku="SKU-G", quantity=7), other),
            stocked.delivery(Restock(sku="SKU-G", quantity=7), other),
        ]
    )

    assert isinstance(applied, Work)
    assert outcomes[0] is None and isinstance(outcomes[1], Work) and outcomes[2] is None
    assert await stocked.level("SKU-G") == {"on_hand": 10 + 5 + 7, "reserved": 0}


async def test_a_batch_committed_but_not_acked_is_deduped_on_redelivery_and_published_once(
    stocked, broker, settings, start_host
):
    """The process dies after its commit, before publishing and acking: the messages come again."""
    placed = [order_placed(f"order-crash-{n}", ("SKU-G", 1)) for n in range(3)]
    envelopes = [Envelope.first(event, event.order_id) for event in placed]
    committed = await stocked.commits.commit(
        [stocked.delivery(e, v) for e, v in zip(placed, envelopes, strict=True)]
    )
    assert all(isinstance(outcome, Work) for outcome in committed)

    async with Tap(settings.rabbitmq_url) as watcher:
        duplicates_before = await outcome_count("inventory", "duplicate")
        await start_host("inventory")  # its outbox sweep at start publishes what was committed
        for event, envelope in zip(placed, envelopes, strict=True):
            await publish(broker, event, envelope)  # the redeliveries
        await eventually(
            lambda: outcome_count("inventory", "duplicate"),
            until=lambda count: count == duplicates_before + 3,
            what="the three redeliveries recognised as copies",
        )
        reserved = await watcher.wait_for(StockReserved.TYPE, count=3)

    assert sorted(StockReserved.parse(m.body).order_id for m in reserved) == [e.order_id for e in placed]
    assert len([m for m in watcher.messages if m.type == StockReserved.TYPE]) == 3
    assert await stocked.level("SKU-G") == {"on_hand": 7, "reserved": 3}


async def test_a_rule_breaker_in_a_waiting_batch_is_dead_lettered_and_the_rest_applied(
    broker, mongo, settings
):
    """Everything is waiting in the queue when the host starts, so it is taken in one batch."""
    gathering = settings.model_copy(update={"emporium_batch_wait_ms": 500.0})
    async with running(ActorHost([inventory], gathering)):
        pass  # declares the queues
    await send(broker, product_created("SKU-W"))
    restocks = [await send(broker, Restock(sku="SKU-W", quantity=q)) for q in (1, 2, 3)]
    # Dispatched without a reservation: inventory refuses that (a broken rule, dead-lettered at once).
    breaker = await send(
        broker,
        ShipmentDispatched(
            order_id="order-never-reserved", shipment_id="s-1", carrier="post", tracking_number="T-1"
        ),
    )
    restocks += [await send(broker, Restock(sku="SKU-W", quantity=q)) for q in (4, 5)]
    redone_before = metrics.BATCHES_REDONE.labels("inventory")._value.get()

    async with (
        running(ActorHost([inventory], gathering)),
        amqp(settings) as rabbit,
        requester(settings) as asker,
    ):
        [dead] = await rabbit.take(dlq_name("inventory"), 1)
        level = await eventually(
            lambda: asker.ask(GetStock(sku="SKU-W"), StockView),
            until=lambda view: view.on_hand == 15,
            what="every restock applied",
        )

    assert dead.message_id == breaker.message_id
    # Replayed, it goes back through inventory's partitions exchange, to its SKU's partition.
    assert dead_letter_headers(dead) == {
        ORIGIN: "inventory.partitions",
        REASON: "rule-violation",
        ATTEMPTS: 1,
    }
    assert level.received == 15
    restocked = await applied_among(
        mongo[settings.database_name("inventory")], [e.message_id for e in restocks]
    )
    assert len(restocked) == 5
    assert metrics.BATCHES_REDONE.labels("inventory")._value.get() >= redone_before + 1


async def test_the_inbox_forgets_message_ids_after_the_dedupe_window(stocked, settings):
    """The server's TTL monitor deletes the records once sent for the window (seen on the embedded
    MongoDB within a minute of expiry; it leaves alone a record not yet sent, whose date is None);
    here: the index it works from follows the setting, and every record of the two applied restocks
    has been sent, or had nothing to send."""
    await OutboxRelay.prepare(stocked.db, settings.model_copy(update={"emporium_inbox_retention_s": 3_600}))
    await OutboxRelay.prepare(stocked.db, settings.model_copy(update={"emporium_inbox_retention_s": 7_200}))

    index = (await stocked.db["outbox"].index_information())[INBOX_EXPIRY]
    assert (index["key"], index["expireAfterSeconds"]) == ([("sent_at", 1)], 7_200)
    records = await stocked.db["outbox"].find({"applied": {"$ne": []}}).to_list()
    assert sum(len(record["applied"]) for record in records) == 2
    assert all(isinstance(record["sent_at"], datetime) for record in records if not record["entries"])


async def test_many_failures_in_a_batch_do_not_run_the_others_again_and_again(stocked):
    """A provider that is down fails every charge of a batch: taking one failure out at a time and
    applying all the others again would run the good handlers once per failure."""

    async def unavailable(payload: Any, work: Work[Any]) -> None:
        raise ConnectionError("the provider is down")

    fine = [stocked.delivery(Restock(sku="SKU-G", quantity=1)) for _ in range(8)]
    failing = [stocked.delivery(Restock(sku="SKU-G", quantity=1), handler=unavailable) for _ in range(8)]

    outcomes = await stocked.commits.commit([*fine, *failing])

    assert all(isinstance(outcome, Work) for outcome in outcomes[:8])
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes[8:])
    # The fine ones: the attempt that met the first failure, then their own batch.
    assert [stocked.runs[d.envelope.message_id] for d in fine] == [2] * 8
    assert [stocked.runs[d.envelope.message_id] for d in failing] == [1] * 8
    assert await stocked.level("SKU-G") == {"on_hand": 10 + 8, "reserved": 0}


async def test_after_a_failure_the_messages_before_and_after_it_commit_in_order(stocked):
    runs_before = dict(stocked.runs)
    before = [stocked.delivery(Restock(sku="SKU-G", quantity=1)) for _ in range(3)]
    bad = stocked.delivery(Restock(sku="SKU-G", quantity=100), handler=poison)
    after = [stocked.delivery(Restock(sku="SKU-G", quantity=2)) for _ in range(3)]

    outcomes = await stocked.commits.commit([*before, bad, *after])

    assert [isinstance(o, Work) for o in outcomes] == [True] * 3 + [False] + [True] * 3
    # Those before it ran in the failed attempt and in their own batch; those after it once.
    runs = {k: v for k, v in stocked.runs.items() if k not in runs_before}
    assert [runs[d.envelope.message_id] for d in (*before, bad, *after)] == [2, 2, 2, 1, 1, 1, 1]
    assert await stocked.level("SKU-G") == {"on_hand": 10 + 3 + 6, "reserved": 0}


class Wait(Command, type="test.lane_wait"):
    key: EntityId


def _in_lane(lane: int, lanes: int, prefix: str) -> str:
    """A correlation id that takes the given lane."""
    return next(f"{prefix}-{n}" for n in range(1_000) if zlib.crc32(f"{prefix}-{n}".encode()) % lanes == lane)


@pytest.mark.parametrize("lanes", [1, 2])
async def test_lanes_let_other_conversations_go_on_while_one_waits(mongo, settings, lanes):
    """With lanes, a conversation whose handling hangs (on something outside, say) does not hold
    up another one's (with one lane it does)."""
    actor = Actor("lanes", Store, lanes=lanes)
    other_went_on = asyncio.Event()

    async def waits_for_the_other(command: Wait, work: Work[Store]) -> None:
        if command.key == "slow":
            await asyncio.wait_for(other_went_on.wait(), 2.0)  # TimeoutError: held up
        else:
            other_went_on.set()

    db = mongo[settings.database_name("lanes")]
    await OutboxRelay.prepare(db, settings)
    commits = GroupCommit(actor, topology_of(actor, settings), mongo, db, None, settings)
    slow, quick = Wait(key="slow"), Wait(key="quick")
    try:
        outcomes = await asyncio.gather(
            commits.apply(Delivery(Envelope.first(slow, _in_lane(0, 2, "order")), slow, waits_for_the_other)),
            commits.apply(
                Delivery(Envelope.first(quick, _in_lane(1, 2, "order")), quick, waits_for_the_other)
            ),
            return_exceptions=True,
        )
    finally:
        await commits.stop()

    if lanes == 2:
        assert all(isinstance(outcome, Work) for outcome in outcomes), outcomes
    else:  # one lane: the quick order waited behind the slow one, which gave up
        assert isinstance(outcomes[0], TimeoutError) and isinstance(outcomes[1], Work)


class Ask(Command, type="test.ask_outside"):
    key: EntityId


async def test_steps_outside_the_transaction_run_once_each_and_one_that_raises_takes_out_only_its_message(
    mongo, settings
):
    actor = Actor("asking", Store)
    asked: list[str] = []

    async def ask_elsewhere(command: Ask, asking: Any) -> str:
        assert asking.store.session is None, "asked inside a transaction"
        asked.append(command.key)
        if command.key == "unreachable":
            raise ConnectionError("the other system is away")
        return f"answer for {command.key}"

    @actor.handles(Ask, asks=ask_elsewhere)
    async def record_answer(command: Ask, work: Work[Store]) -> None:
        if command.key == "breaks":
            raise RuleViolation("this one breaks a rule")
        await work.store.db["answers"].insert_one(
            {"_id": command.key, "asked": work.asked}, session=work.store.session
        )

    db = mongo[settings.database_name("asking")]
    await OutboxRelay.prepare(db, settings)
    commits = GroupCommit(actor, topology_of(actor, settings), mongo, db, None, settings)
    commands = [Ask(key=key) for key in ("a", "unreachable", "breaks", "b")]

    outcomes = await commits.commit(
        [Delivery(Envelope.first(c, "c-ask"), c, record_answer) for c in commands]
    )

    assert [type(o).__name__ for o in outcomes] == ["Work", "ConnectionError", "RuleViolation", "Work"]
    # The batch was applied three times (whole, then before and after the rule breaker): its
    # answers were kept, each step ran once.
    assert sorted(asked) == ["a", "b", "breaks", "unreachable"]
    assert await db["answers"].find().sort("_id").to_list() == [
        {"_id": "a", "asked": "answer for a"},
        {"_id": "b", "asked": "answer for b"},
    ]


class Step(Command, type="test.conversation_step"):
    key: EntityId
    seq: int


async def test_an_actor_with_outside_steps_takes_one_message_per_conversation_into_a_batch(mongo, settings):
    """Each outside step is asked about what is committed before its batch: a second message of one
    order in the same batch would be asked about a state the first has already moved past."""
    actor = Actor("one-each", Store)
    batches: dict[int, list[tuple[str, int]]] = {}

    async def count_committed(command: Step, asking: Any) -> int:
        return await asking.store.db["steps"].count_documents({"key": command.key})

    @actor.handles(Step, asks=count_committed)
    async def record_step(command: Step, work: Work[Store]) -> None:
        batches.setdefault(id(work.store), []).append((command.key, command.seq))
        await work.store.db["steps"].insert_one(
            {"key": command.key, "seq": command.seq, "committed_before": work.asked},
            session=work.store.session,
        )

    db = mongo[settings.database_name("one-each")]
    await OutboxRelay.prepare(db, settings)
    commits = GroupCommit(actor, topology_of(actor, settings), mongo, db, None, settings)
    steps = [Step(key=k, seq=s) for k, s in (("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1))]
    try:
        outcomes = await asyncio.gather(
            *(commits.apply(Delivery(Envelope.first(s, f"order-{s.key}"), s, record_step)) for s in steps)
        )
    finally:
        await commits.stop()

    assert all(isinstance(outcome, Work) for outcome in outcomes), outcomes
    for batch in batches.values():
        keys = [key for key, _ in batch]
        assert len(keys) == len(set(keys)), f"one conversation twice in a batch: {batch}"
    assert any(len(batch) > 1 for batch in batches.values()), "no two conversations shared a batch"
    # Each step was asked about every step of its order before it, in the order they came.
    rows = await db["steps"].find({}, {"_id": 0}).sort([("key", 1), ("seq", 1)]).to_list()
    assert [(r["key"], r["seq"], r["committed_before"]) for r in rows] == [
        ("a", 0, 0),
        ("a", 1, 1),
        ("a", 2, 2),
        ("b", 0, 0),
        ("b", 1, 1),
    ]
