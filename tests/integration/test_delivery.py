"""The runtime's delivery guarantees, on the real RabbitMQ and MongoDB.

- a message delivered twice is applied once, and its events are emitted once;
- an event committed but not published (a crash in between) is published later, exactly once;
- a transient failure is retried with growing delays, then dead-lettered with its reason;
- an invalid message or a broken rule goes to the dead-letter queue at once and changes nothing;
- a message whose first handling was abandoned inside its transaction (its process was killed) is
  applied again at once, not once the server has reaped the abandoned transaction.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from pydantic import Field

from actors.catalog import catalog
from actors.runtime.actor import Actor, Work
from actors.runtime.host import ActorHost
from actors.runtime.outbox import applied_messages
from actors.runtime.store import Store
from brokers.contracts.catalog import CreateProduct
from brokers.contracts.inventory import GetStock, Restock, StockReserved, StockView
from brokers.deadletters import ATTEMPTS, ERROR, ORIGIN, REASON
from brokers.envelope import Command, Envelope, Message
from brokers.factory import publish
from brokers.topology import COMMANDS, dlq_name
from tests.helpers import Tap, eventually, send
from tests.integration.rivals import Rivals
from tests.integration.support import (
    amqp,
    dead_letter_headers,
    header,
    order_placed,
    outcome_count,
    product_created,
    publish_raw,
    requester,
    running,
    stock,
)


def lamp(product_id: str, sku: str) -> CreateProduct:
    return CreateProduct(
        product_id=product_id, sku=sku, name="Desk lamp", category="lighting", price_cents=2_500
    )


# --- 1. a message delivered twice is applied once ------------------------------------------------


async def test_the_same_restock_delivered_twice_is_applied_once(start_host, broker, mongo, settings):
    await start_host("inventory")
    async with requester(settings) as asker:
        await stock(broker, asker, "SKU-DUP", 1)
        duplicates_before = await outcome_count("inventory", "duplicate")

        restock = Restock(sku="SKU-DUP", quantity=5)
        envelope = await send(broker, restock)
        await publish(broker, restock, envelope)  # the very same envelope again: a redelivery

        await eventually(
            lambda: outcome_count("inventory", "duplicate"),
            until=lambda count: count == duplicates_before + 1,
            what="the second copy recognised as a duplicate",
        )
        level = await asker.ask(GetStock(sku="SKU-DUP"), StockView)

    assert (level.on_hand, level.received) == (1 + 5, 1 + 5)
    db = mongo[settings.database_name("inventory")]
    assert len(await applied_messages(db, message_id=envelope.message_id)) == 1


async def test_the_same_order_placed_twice_reserves_and_emits_once(start_host, broker, settings):
    await start_host("inventory")
    async with Tap(settings.rabbitmq_url) as watcher, requester(settings) as asker:
        await stock(broker, asker, "SKU-TWICE", 3)
        duplicates_before = await outcome_count("inventory", "duplicate")

        placed = order_placed("order-twice", ("SKU-TWICE", 2))
        envelope = await send(broker, placed)
        await publish(broker, placed, envelope)

        await eventually(
            lambda: outcome_count("inventory", "duplicate"),
            until=lambda count: count == duplicates_before + 1,
            what="the second copy recognised as a duplicate",
        )
        [reserved] = await watcher.wait_for(StockReserved.TYPE)
        level = await asker.ask(GetStock(sku="SKU-TWICE"), StockView)

    # The duplicate was skipped before this point, so no second reservation can follow.
    assert len(watcher.of_type(StockReserved.TYPE)) == 1
    assert (reserved.headers or {}).get("causation_id") == envelope.message_id
    assert StockReserved.parse(reserved.body).order_id == "order-twice"
    assert (level.on_hand, level.reserved) == (1, 2)


async def test_a_message_abandoned_inside_its_transaction_is_applied_again_at_once(mongo, settings):
    """A process killed while its handler waits (on a provider, say) leaves its transaction open on
    the server for 60 s. Before: it had written the message's inbox record first, so the redelivered
    copy conflicted with it until then, and with_transaction kept retrying: an order stalled a minute."""
    rivals = Rivals("inventory", settings, mongo)
    await rivals.prepare()
    await rivals.apply(product_created("SKU-ABANDONED"), "c-abandoned")
    restock = Restock(sku="SKU-ABANDONED", quantity=3)
    envelope = Envelope.first(restock, "c-abandoned")
    consumer = rivals._consumer()
    _, handler = consumer.actor.handlers[Restock.TYPE]
    waiting = asyncio.Event()

    async def dies_while_waiting(payload: Restock, work: Work[Any]) -> None:
        waiting.set()
        await asyncio.Event().wait()  # never answered: its transaction stays open, as a killed one's

    abandoned = asyncio.create_task(consumer._transact(envelope, restock, dies_while_waiting))
    try:
        await asyncio.wait_for(waiting.wait(), 10)
        # Well inside the 60 s the server keeps an abandoned transaction.
        work = await asyncio.wait_for(consumer._transact(envelope, restock, handler), 15)
    finally:
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)

    assert work is not None
    assert len(await applied_messages(rivals.db, message_id=envelope.message_id)) == 1


# --- 2. a crash between commit and publish loses no event ----------------------------------------


class SimulatedCrash(ConnectionError):
    """Stands for the process dying after its transaction committed, before the relay published."""


async def outbox_record_caused_by(mongo, settings, envelope: Envelope) -> dict[str, Any] | None:
    """The catalog's outbox record holding the event emitted while handling this command (runtime data)."""
    outbox = mongo[settings.database_name("catalog")]["outbox"]
    return await outbox.find_one({"entries.envelope.causation_id": envelope.message_id})


def _sent(record: dict[str, Any] | None) -> bool:
    return record is not None and record["sent_at"] is not None


async def test_an_event_committed_but_never_published_is_published_by_the_next_host(
    start_host, broker, mongo, settings, monkeypatch
):
    tried_to_publish = asyncio.Event()

    async def crash(records: list[dict]) -> None:
        tried_to_publish.set()
        raise SimulatedCrash("the process died between commit and publish")

    async with Tap(settings.rabbitmq_url) as watcher:
        async with running(ActorHost([catalog], settings)) as doomed:
            monkeypatch.setattr(doomed.relays["catalog"], "publish", crash)
            envelope = await send(broker, lamp("p-crash", "SKU-CRASH"))
            await asyncio.wait_for(tried_to_publish.wait(), timeout=20)
            record = await outbox_record_caused_by(mongo, settings, envelope)

            assert record is not None and record["sent_at"] is None
            assert watcher.of_type("product.created") == []

        await start_host("catalog")
        [published] = await watcher.wait_for("product.created")
        sent = await eventually(
            lambda: outbox_record_caused_by(mongo, settings, envelope),
            until=_sent,
            what="the record marked sent",
        )
        # Marked sent, so no sweep publishes it again.
        assert len(watcher.of_type("product.created")) == 1

    assert sent["_id"] == record["_id"]
    assert published.message_id == record["entries"][0]["message_id"]
    assert published.correlation_id == envelope.correlation_id


async def test_the_sweeper_publishes_what_the_fast_path_failed_to_without_a_restart(
    broker, mongo, settings, monkeypatch
):
    host = ActorHost([catalog], settings)
    relay = host.relays["catalog"]
    publish_for_real = relay.publish
    failed: list[list[dict]] = []

    async def fail_the_first_batch(records: list[dict]) -> None:
        if records and not failed:
            failed.append(records)
            raise SimulatedCrash("RabbitMQ was away for a moment")
        await publish_for_real(records)

    monkeypatch.setattr(relay, "publish", fail_the_first_batch)
    async with Tap(settings.rabbitmq_url) as watcher, running(host):
        envelope = await send(broker, lamp("p-sweep", "SKU-SWEEP"))
        [published] = await watcher.wait_for("product.created")
        record = await eventually(
            lambda: outbox_record_caused_by(mongo, settings, envelope),
            until=_sent,
            what="the record marked sent",
        )
        assert len(watcher.of_type("product.created")) == 1

    assert [[r["_id"] for r in batch] for batch in failed] == [[record["_id"]]]
    assert published.message_id == record["entries"][0]["message_id"]


# --- 3. a transient failure: retried with growing delays, then dead-lettered ---------------------


class FlakyCommand(Command, type="test.flaky_command"):
    key: str = Field(min_length=1, max_length=64)


class WriteLog(Store):
    """The flaky actor's data: one document per handled command, written before it fails."""

    async def write(self, key: str) -> None:
        await self.db["writes"].insert_one({"key": key}, session=self.session)


@dataclass
class Flaky:
    """A test actor whose handler fails its first ``failures`` attempts (every one when None)."""

    failures: int | None
    attempts: list[float] = field(default_factory=list)

    def actor(self) -> Actor[WriteLog]:
        flaky: Actor[WriteLog] = Actor("flaky", WriteLog)

        @flaky.handles(FlakyCommand)
        async def handle(command: FlakyCommand, work: Work[WriteLog]) -> None:
            self.attempts.append(time.monotonic())
            await work.store.write(command.key)
            if self.failures is None or len(self.attempts) <= self.failures:
                raise ConnectionError(f"downstream unavailable at attempt {len(self.attempts)}")

        return flaky


async def test_a_transient_failure_is_retried_with_growing_delays_then_dead_lettered(broker, mongo, settings):
    flaky = Flaky(failures=None)
    delays_s = [ms / 1000 for ms in settings.emporium_retry_delays_ms]
    async with running(ActorHost([flaky.actor()], settings)), amqp(settings) as rabbit:
        envelope = await send(broker, FlakyCommand(key="k-1"))
        [dead] = await rabbit.take(dlq_name("flaky"), 1)

    assert len(flaky.attempts) == 1 + len(delays_s) == 4
    gaps = [later - earlier for earlier, later in pairwise(flaky.attempts)]
    # Lower bounds only: each wait lasts at least its tier's TTL, and the tiers grow.
    assert all(gap >= delay for gap, delay in zip(gaps, delays_s, strict=True)), (gaps, delays_s)
    assert delays_s == sorted(set(delays_s))

    assert dead.message_id == envelope.message_id
    assert dead_letter_headers(dead) == {ORIGIN: "flaky", REASON: "retries-exhausted", ATTEMPTS: 4}
    assert "ConnectionError: downstream unavailable at attempt 4" in header(dead, ERROR)
    # Every attempt wrote, then failed: none of the writes was committed.
    db = mongo[settings.database_name("flaky")]
    assert await db["writes"].count_documents({}) == 0
    assert await applied_messages(db) == []


async def test_a_failure_that_clears_up_is_applied_once_and_not_dead_lettered(broker, mongo, settings):
    flaky = Flaky(failures=2)
    db = mongo[settings.database_name("flaky")]
    async with running(ActorHost([flaky.actor()], settings)), amqp(settings) as rabbit:
        envelope = await send(broker, FlakyCommand(key="k-2"))
        await eventually(
            lambda: applied_messages(db, message_id=envelope.message_id), what="the command applied"
        )
        assert await rabbit.depth(dlq_name("flaky")) == 0

    assert len(flaky.attempts) == 3
    assert await db["writes"].find({}, {"_id": 0}).to_list() == [{"key": "k-2"}]


# --- 4. permanent failures: the dead-letter queue at once, nothing changed -----------------------


def amqp_fields(message: Message) -> dict[str, Any]:
    """The body and AMQP properties the runtime would publish for this contract."""
    envelope = Envelope.first(message)
    return {
        "body": message.body(),
        "message_id": envelope.message_id,
        "correlation_id": envelope.correlation_id,
        "type": envelope.type,
        "headers": envelope.amqp()["headers"],
        "content_type": "application/json",
        "delivery_mode": 2,
    }


def _with_body_field(fields: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**fields, "body": json.dumps({**json.loads(fields["body"]), name: value}).encode()}


def _without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != name}


# case -> (how the valid message is broken, what the dead letter's error must say)
BROKEN: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "body-fails-validation": (lambda f: _with_body_field(f, "sku", "not a sku"), "sku"),
    "unknown-type-on-a-bound-key": (lambda f: {**f, "type": "catalog.delete_product"}, "does not handle"),
    "no-message-id": (lambda f: _without(f, "message_id"), "message_id"),
    "no-correlation-id": (lambda f: _without(f, "correlation_id"), "correlation_id"),
    "unsupported-schema-version": (
        lambda f: {**f, "headers": {**f["headers"], "schema_version": 2}},
        "schema version 2 is not supported",
    ),
    "malformed-json": (lambda f: {**f, "body": b'{"product_id": "p-1", "sku": '}, "Invalid JSON"),
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_an_invalid_message_is_dead_lettered_at_once_and_changes_nothing(
    case, start_host, broker, mongo, settings, management
):
    breaks, error_says = BROKEN[case]
    await start_host("catalog")
    retried_before = await outcome_count("catalog", "retried")
    broken = breaks(amqp_fields(lamp("p-1", "SKU-1")))
    body, properties = broken["body"], _without(broken, "body")
    db = mongo[settings.database_name("catalog")]

    async with Tap(settings.rabbitmq_url) as watcher, amqp(settings) as rabbit:
        publish_raw(
            management,
            settings,
            exchange=COMMANDS.name,
            routing_key=CreateProduct.TYPE,
            body=body,
            properties=properties,
        )
        [dead] = await rabbit.take(dlq_name("catalog"), 1)

        assert dead.body == body
        assert dead_letter_headers(dead) == {ORIGIN: "catalog", REASON: "invalid-message", ATTEMPTS: 1}
        assert error_says in header(dead, ERROR)
        assert await outcome_count("catalog", "retried") == retried_before
        for collection in ("products", "outbox"):  # the outbox holds the inbox too
            assert await db[collection].count_documents({}) == 0, collection

        # The same host applies a valid command: the watcher sees its event, and only that one.
        valid = await send(broker, lamp("p-1", "SKU-1"))
        [created] = await watcher.wait_for("product.created")
    assert created.headers["causation_id"] == valid.message_id
    assert len(watcher.messages) == 1


async def test_a_broken_rule_is_dead_lettered_at_once_and_changes_nothing(
    start_host, broker, mongo, settings
):
    await start_host("catalog")
    db = mongo[settings.database_name("catalog")]
    async with Tap(settings.rabbitmq_url) as watcher, amqp(settings) as rabbit:
        await send(broker, lamp("p-first", "SKU-TAKEN"))
        await watcher.wait_for("product.created")

        refused = await send(broker, lamp("p-second", "SKU-TAKEN"))
        [dead] = await rabbit.take(dlq_name("catalog"), 1)

    assert dead.message_id == refused.message_id
    assert dead_letter_headers(dead) == {ORIGIN: "catalog", REASON: "rule-violation", ATTEMPTS: 1}
    assert "SKU SKU-TAKEN already belongs to product p-first" in header(dead, ERROR)
    assert await db["products"].distinct("_id") == ["p-first"]
    assert await applied_messages(db, message_id=refused.message_id) == []
    assert len(watcher.of_type("product.created")) == 1
