"""The outbox sweeper with several replicas of an actor, on the real RabbitMQ and MongoDB: each
claims what is due before publishing it, so entries left unsent are published once, not once per
replica."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from actors.runtime.outbox import OutboxRelay, outbox_entry
from brokers.contracts.catalog import ProductCreated
from brokers.envelope import Envelope
from tests.helpers import Tap, eventually
from tests.integration.support import product_created


def left_unsent(count: int) -> list[dict]:
    """Entries a crash left behind, a minute old."""
    entries = []
    for n in range(count):
        event = product_created(f"SKU-SWEPT-{n}")
        entry = outbox_entry(event, Envelope.first(event))
        entries.append({**entry, "created_at": datetime.now(UTC) - timedelta(minutes=1)})
    return entries


async def test_two_replicas_sweeping_at_once_publish_each_entry_once(broker, mongo, settings):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db)
    entries = left_unsent(60)
    await db["outbox"].insert_many(entries)
    replicas = [OutboxRelay("catalog", broker, db, sweep_s=5.0) for _ in range(2)]

    async with Tap(settings.rabbitmq_url) as watcher:
        swept = await asyncio.gather(
            *(replica.sweep(older_than=timedelta(seconds=5)) for replica in replicas)
        )
        await watcher.wait_for(ProductCreated.TYPE, count=60)
        unsent = await db["outbox"].count_documents({"sent_at": None})

    assert sum(swept) == 60, swept
    published = [m.message_id for m in watcher.messages if m.type == ProductCreated.TYPE]
    assert sorted(published) == sorted(entry["_id"] for entry in entries)  # each once
    assert unsent == 0


async def test_entries_a_sweep_could_not_publish_are_free_for_the_next_one(
    broker, mongo, settings, monkeypatch
):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db)
    await db["outbox"].insert_many(left_unsent(3))
    failing, healthy = (OutboxRelay("catalog", broker, db, sweep_s=5.0) for _ in range(2))

    async def broker_away(entries: list[dict], sent: set[str]) -> None:
        raise ConnectionError("the broker is away")

    monkeypatch.setattr(failing, "_send", broker_away)
    with pytest.raises(ConnectionError):
        await failing.sweep(older_than=timedelta(seconds=5))

    async with Tap(settings.rabbitmq_url) as watcher:
        # Not held back by the failed sweep's claim (it would last 30 s).
        assert await healthy.sweep(older_than=timedelta(seconds=5)) == 3
        await watcher.wait_for(ProductCreated.TYPE, count=3)
    assert (
        await eventually(lambda: db["outbox"].count_documents({"sent_at": None}), until=lambda n: n == 0) == 0
    )


async def test_what_the_fast_path_published_is_marked_sent_in_one_round_and_never_swept(
    broker, mongo, settings
):
    db = mongo[settings.database_name("catalog")]
    await OutboxRelay.prepare(db)
    entries = left_unsent(6)
    await db["outbox"].insert_many(entries)
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
        for batch in (entries[:2], entries[2:4], entries[4:]):
            await relay.publish(batch)
        # Before that mark, a sweep (one right now would find them due) leaves them alone.
        assert await relay.sweep(older_than=timedelta(seconds=5)) == 0
        await eventually(
            lambda: db["outbox"].count_documents({"sent_at": None}), until=lambda n: n == 0, what="marked"
        )
        await watcher.wait_for(ProductCreated.TYPE, count=6)

    assert marks == [6]
    published = [m.message_id for m in watcher.messages if m.type == ProductCreated.TYPE]
    assert sorted(published) == sorted(entry["_id"] for entry in entries)  # each once
