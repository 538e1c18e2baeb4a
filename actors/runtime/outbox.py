"""The outbox: events written in the handler's transaction, published after commit.

The fast path publishes right after commit. A sweeper republishes whatever is left unsent (a crash
between commit and publish, the broker away for a while): everything at start, then entries older
than one sweep interval. Publishing twice is harmless; consumers skip message ids they have applied.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from faststream.rabbit import RabbitBroker
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from brokers.envelope import Envelope, Event
from brokers.factory import publish_body
from brokers.topology import exchange_for
from actors.runtime import metrics

log = structlog.get_logger()
_SENT_RETENTION = timedelta(hours=24)
_SWEEP_BATCH = 500


def outbox_entry(event: Event, envelope: Envelope) -> dict[str, Any]:
    return {
        "_id": envelope.message_id,
        "exchange": exchange_for(event).name,
        "routing_key": event.TYPE,
        "body": event.body(),
        "envelope": envelope.model_dump(mode="json"),
        "created_at": datetime.now(UTC),
        "sent_at": None,
    }


class OutboxRelay:
    def __init__(self, actor: str, broker: RabbitBroker, db: AsyncDatabase, *, sweep_s: float) -> None:
        self.actor = actor
        self._broker = broker
        self._outbox = db["outbox"]
        self._sweep_s = sweep_s
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    async def prepare(db: AsyncDatabase) -> None:
        await db["outbox"].create_index([("sent_at", ASCENDING), ("created_at", ASCENDING)])

    async def publish(self, entries: list[dict[str, Any]]) -> None:
        """Publish entries in order, each confirmed, then mark them sent."""
        for entry in entries:
            await publish_body(
                self._broker,
                entry["body"],
                exchange=entry["exchange"],
                routing_key=entry["routing_key"],
                envelope=Envelope.model_validate(entry["envelope"]),
            )
        if entries:
            await self._outbox.update_many(
                {"_id": {"$in": [e["_id"] for e in entries]}}, {"$set": {"sent_at": datetime.now(UTC)}}
            )
            metrics.OUTBOX_PUBLISHED.labels(self.actor).inc(len(entries))

    async def sweep(self, older_than: timedelta) -> int:
        """Republish unsent entries created before now - older_than; returns how many."""
        now = datetime.now(UTC)
        unsent = {"sent_at": None}
        pending = await self._outbox.find(
            {**unsent, "created_at": {"$lte": now - older_than}}, sort=[("created_at", ASCENDING)]
        ).to_list(_SWEEP_BATCH)
        await self.publish(pending)
        await self._outbox.delete_many({"sent_at": {"$lt": now - _SENT_RETENTION}})
        oldest = await self._outbox.find_one(unsent, sort=[("created_at", ASCENDING)])
        metrics.OUTBOX_UNSENT.labels(self.actor).set(await self._outbox.count_documents(unsent))
        age = (now - oldest["created_at"].replace(tzinfo=UTC)).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_SECONDS.labels(self.actor).set(max(age, 0.0))
        return len(pending)

    async def start(self) -> None:
        republished = await self.sweep(older_than=timedelta(0))
        if republished:
            log.warning("outbox.republished_at_start", actor=self.actor, count=republished)
        self._task = asyncio.create_task(self._sweep_forever(), name=f"{self.actor}-outbox-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                await self.sweep(older_than=timedelta(seconds=self._sweep_s))
            except Exception as exc:  # the sweeper must outlive a broker or database outage
                log.warning("outbox.sweep_failed", actor=self.actor, error=repr(exc))
