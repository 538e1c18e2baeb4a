"""The outbox sweeper with several replicas of an actor, on the real RabbitMQ and MongoDB: each
claims what is due before publishing it, so records left unsent are published once, not once per
replica."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue
from pymongo.errors import DuplicateKeyError

from actors.runtime.outbox import (
    OutboxNotPublished,
    OutboxRelay,
    applied_among,
    outbox_entries,
    outbox_entry,
    outbox_record,
)
from brokers.contracts.catalog import ProductCreated
from brokers.envelope import Envelope
from tests.helpers import Tap, eventually
from tests.integration.support import product_created


def left_unsent(records: int, entries: int = 1) -> list[dict]:
    """Records a crash left behind, a minute old, of ``entries`` events each."""
    left = []
    for r in range(records):
        events = [product_created(f"SKU-SWEPT-{r}-{n}") for n in range(entries)]
        record = outbox_record([outbox_entry(event, Envelope.first(event)) for event in events])
        left.append({**record, "created_at": datetime.now(UTC) - timedelta(minutes=1)})
    return left


def message_ids(records: list[dict]) -> list[str]:
    return sorted(entry["message_id"] for record in records for entry in record["entries"])


async def unsent(db) -> int:
    return await db["outbox"].count_documents({"sent_at": None})


async def test_two_replicas_sweeping_at_once_publish_each_entry_once(broker, mongo, settings):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db, settings)
    records = left_unsent(20, entries=3)
    await db["outbox"].insert_many(records)
    replicas = [OutboxRelay("catalog", broker, db, sweep_s=5.0) for _ in range(2)]

    async with Tap(settings.rabbitmq_url) as watcher:
        swept = await asyncio.gather(
            *(replica.sweep(older_than=timedelta(seconds=5)) for replica in replicas)
        )
        await watcher.wait_for(ProductCreated.TYPE, count=60)
        left = await unsent(db)

    assert sum(swept) == 60, swept
    published = [m.message_id for m in watcher.messages if m.type == ProductCreated.TYPE]
    assert sorted(published) == message_ids(records)  # each once
    assert left == 0


async def test_entries_a_sweep_could_not_publish_are_free_for_the_next_one(
    broker, mongo, settings, monkeypatch
):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db, settings)
    await db["outbox"].insert_many(left_unsent(3))
    failing, healthy = (OutboxRelay("catalog", broker, db, sweep_s=5.0) for _ in range(2))

    async def broker_away(records: list[dict], sent: set[str]) -> None:
        raise ConnectionError("the broker is away")

    monkeypatch.setattr(failing, "_send", broker_away)
    with pytest.raises(ConnectionError):
        await failing.sweep(older_than=timedelta(seconds=5))

    async with Tap(settings.rabbitmq_url) as watcher:
        # Not held back by the failed sweep's claim (it would last 30 s).
        assert await healthy.sweep(older_than=timedelta(seconds=5)) == 3
        await watcher.wait_for(ProductCreated.TYPE, count=3)
    assert await eventually(lambda: unsent(db), until=lambda n: n == 0) == 0


async def test_a_record_is_marked_sent_only_once_every_entry_in_it_went_out(broker, mongo, settings):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db, settings)
    [record] = left_unsent(1, entries=2)
    record["entries"][1]["exchange"] = "emporium.test-late"  # declared only after the first sweep
    await db["outbox"].insert_one(record)
    relay = OutboxRelay("catalog", broker, db, sweep_s=5.0)

    with pytest.raises(OutboxNotPublished, match="no exchange 'emporium.test-late'"):
        await relay.sweep(older_than=timedelta(seconds=5))
    assert await unsent(db) == 1  # whatever of it went out, it is all tried again

    late = await broker.declare_exchange(RabbitExchange("emporium.test-late", type=ExchangeType.TOPIC))
    await (await broker.declare_queue(RabbitQueue("test-late", auto_delete=True))).bind(late, "#")
    async with Tap(settings.rabbitmq_url) as watcher:
        assert await relay.sweep(older_than=timedelta(seconds=5)) == 2
        await watcher.wait_for(ProductCreated.TYPE)
    assert await unsent(db) == 0


async def test_what_the_fast_path_published_is_marked_sent_in_one_round_and_never_swept(
    broker, mongo, settings
):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db, settings)
    records = left_unsent(6, entries=2)
    await db["outbox"].insert_many(records)
    # A long linger, so that the three publishes surely fall within it on a busy machine.
    relay = OutboxRelay("catalog", broker, db, sweep_s=5.0, mark_after_s=2.0)
    marks: list[int] = []
    mark = relay._mark

    async def counted_mark(sent: set[str]) -> None:
        marks.append(len(sent))
        await mark(sent)

    relay._mark = counted_mark  # type: ignore[method-assign]
    async with Tap(settings.rabbitmq_url) as watcher:
        # Three batches published one after another: one mark for all of them, a moment later.
        for batch in (records[:2], records[2:4], records[4:]):
            await relay.publish(batch)
        # Before that mark, a sweep (one right now would find them due) leaves them alone.
        assert await relay.sweep(older_than=timedelta(seconds=5)) == 0
        await eventually(lambda: unsent(db), until=lambda n: n == 0, what="marked")
        await watcher.wait_for(ProductCreated.TYPE, count=12)

    assert marks == [6]
    published = [m.message_id for m in watcher.messages if m.type == ProductCreated.TYPE]
    assert sorted(published) == message_ids(records)  # each once


async def test_an_outbox_of_one_document_per_entry_is_published_after_an_upgrade(broker, mongo, settings):
    db = mongo[settings.database_name("catalog")]
    events = [product_created(f"SKU-OLD-{n}") for n in range(3)]
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    old_shape = []
    for n, event in enumerate(events):
        entry = outbox_entry(event, Envelope.first(event))
        old_shape.append(
            {
                "_id": entry.pop("message_id"),
                **entry,
                "created_at": an_hour_ago,
                "sent_at": an_hour_ago if n == 0 else None,
            }
        )
    await db["outbox"].insert_many(old_shape)

    await OutboxRelay.prepare(db, settings)
    async with Tap(settings.rabbitmq_url) as watcher:
        assert await OutboxRelay("catalog", broker, db, sweep_s=5.0).sweep(older_than=timedelta(0)) == 2
        await watcher.wait_for(ProductCreated.TYPE, count=2)

    published = sorted(m.message_id for m in watcher.messages if m.type == ProductCreated.TYPE)
    assert published == sorted(doc["_id"] for doc in old_shape[1:])  # the sent one is not sent again
    assert await db["outbox"].count_documents({"entries": {"$exists": False}}) == 0
    assert len(await outbox_entries(db)) == 2


async def test_an_inbox_of_one_document_per_message_id_still_knows_them_after_an_upgrade(mongo, settings):
    db = mongo[settings.database_name("catalog")]
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await db["inbox"].insert_many(
        [{"_id": f"m-{n}", "type": "catalog.create_product", "at": an_hour_ago} for n in range(3)]
    )

    await OutboxRelay.prepare(db, settings)
    await OutboxRelay.prepare(db, settings)  # a second replica starting: nothing moves twice

    assert await applied_among(db, ["m-0", "m-1", "m-2", "m-new"]) == {"m-0", "m-1", "m-2"}
    assert "inbox" not in await db.list_collection_names()
    # A copy of one of them now fails its transaction's record, as a copy does.
    with pytest.raises(DuplicateKeyError):
        await db["outbox"].insert_one(outbox_record([], [("m-new", "x"), ("m-1", "x")]))
