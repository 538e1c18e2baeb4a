"""The outbox: events written in the handler's transaction, published after commit.

A transaction adds one outbox record holding all of its entries (the messages its handlers sent):
the embedded MongoDB's cost is per document as well as per command, and one record is written
once and marked sent once, where an entry each would be 2 x 20 document writes for one batch.

The fast path publishes right after commit. What it published is marked sent a moment later, with
whatever else went out meanwhile (one round trip for many batches, not one each; the sweeper leaves
those records alone). A sweeper republishes whatever is left unsent (a crash between commit and
publish or before the mark, the broker away for a while): everything at start, then records older
than one sweep interval. A record is marked sent only once every entry in it went out; publishing
twice is harmless, consumers skip message ids they have applied. Each entry keeps the trace context
of the handler that wrote it, so whenever it is published, its message continues that handler's trace.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from faststream.rabbit import RabbitBroker
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from actors.runtime import metrics
from brokers.envelope import Envelope, Message, new_id
from brokers.factory import publish_body
from brokers.topology import MOVES, exchange_for
from brokers.tracing import actor_service, continued, current_carrier, serving

log = structlog.get_logger()
_SENT_RETENTION = timedelta(hours=24)
# Records a sweeper publishes at once (each holds up to a batch of entries).
_SWEEP_BATCH = 20
# How long a sweeper's claim on records keeps other sweepers off them (at least four sweeps).
_CLAIM_LEASE = timedelta(seconds=30)
# How long the fast path's published records wait to be marked sent with the ones after them.
_MARK_AFTER_S = 0.2


def outbox_entry(message: Message, envelope: Envelope, *, routing_key: str | None = None) -> dict[str, Any]:
    """An outbox entry: to the exchange of the message's kind, or moved into one of the actor's own
    queues by name (``routing_key``: a timer's delay queue)."""
    return {
        "message_id": envelope.message_id,
        "exchange": exchange_for(message).name if routing_key is None else MOVES.name,
        "routing_key": message.TYPE if routing_key is None else routing_key,
        "body": message.body(),
        "envelope": envelope.model_dump(mode="json"),
        "trace": current_carrier(),
    }


def outbox_record(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What one transaction adds to the outbox: its entries, in the order they were sent."""
    return {"_id": new_id(), "entries": entries, "created_at": datetime.now(UTC), "sent_at": None}


async def outbox_entries(db: AsyncDatabase, **where: Any) -> list[dict[str, Any]]:
    """The entries in an actor's outbox, oldest record first, that match ``where`` (entry fields:
    ``routing_key="order.placed"``, say); for tests and operators, not the hot path."""
    pipeline: list[dict[str, Any]] = [
        {"$sort": {"created_at": ASCENDING}},
        {"$unwind": "$entries"},
        {"$replaceRoot": {"newRoot": "$entries"}},
    ]
    if where:
        pipeline.append({"$match": where})
    return await (await db["outbox"].aggregate(pipeline)).to_list()


class OutboxNotPublished(Exception):
    """Some outbox entries could not be published; their records stay unsent for the next sweep."""


class OutboxRelay:
    def __init__(
        self,
        actor: str,
        broker: RabbitBroker,
        db: AsyncDatabase,
        *,
        sweep_s: float,
        mark_after_s: float = _MARK_AFTER_S,
    ) -> None:
        self.actor = actor
        self._broker = broker
        self._outbox = db["outbox"]
        self._sweep_s = sweep_s
        self._mark_after_s = mark_after_s
        self._task: asyncio.Task[None] | None = None
        # Records this process is publishing right now, or has published and not yet marked sent:
        # the sweeper leaves them to the fast path.
        self._in_flight: set[str] = set()
        self._unmarked: set[str] = set()
        self._marker: asyncio.Task[None] | None = None

    @staticmethod
    async def prepare(db: AsyncDatabase) -> None:
        outbox = db["outbox"]
        await outbox.create_index([("sent_at", ASCENDING), ("created_at", ASCENDING)])
        # An outbox from before records (a document per entry): each unsent entry becomes a record
        # of its own. Two replicas doing it at once, or a crash halfway, only republish one.
        async for old in outbox.find({"entries": {"$exists": False}, "sent_at": None}):
            entry = {key: old.get(key) for key in ("exchange", "routing_key", "body", "envelope", "trace")}
            record = outbox_record([{"message_id": old["_id"], **entry}])
            await outbox.insert_one({**record, "created_at": old["created_at"]})
            await outbox.delete_one({"_id": old["_id"]})
        await outbox.delete_many({"entries": {"$exists": False}})

    async def publish(self, records: list[dict[str, Any]]) -> None:
        """Publish records just committed, each entry confirmed; raise if any could not be. Those
        that went out whole are marked sent shortly, together with what is published meanwhile."""
        try:
            await self._send(records, self._unmarked)
        finally:
            if self._unmarked and (self._marker is None or self._marker.done()):
                self._marker = asyncio.create_task(self._mark_soon(), name=f"{self.actor}-outbox-marks")

    async def settle(self) -> None:
        """Mark sent what was published and not marked yet: when the process stops publishing."""
        await _cancelled(self._marker)
        self._marker = None
        await self._mark(self._unmarked)

    async def _send(self, records: list[dict[str, Any]], sent: set[str]) -> None:
        """Publish the records' entries, adding to ``sent`` the ids of the records that went out
        whole; raise if any entry could not.

        One entry that cannot be published (its exchange gone, say) must not hold back the others.
        """
        entries = [entry for record in records for entry in record["entries"]]
        published: set[str] = set()
        failures: list[str] = []
        ids = {record["_id"] for record in records}
        self._in_flight |= ids
        try:
            # Published from the group commit's workers and the sweeper, outside any handler: as the actor.
            with serving(actor_service(self.actor)):
                await self._publish_each(entries, published, failures)
        finally:
            sent.update(
                record["_id"]
                for record in records
                if all(entry["message_id"] in published for entry in record["entries"])
            )
            self._in_flight -= ids
        metrics.OUTBOX_PUBLISHED.labels(self.actor).inc(len(published))
        if failures:
            raise OutboxNotPublished(
                f"{len(failures)} of {len(entries)} not published: " + "; ".join(failures[:3])
            )

    async def _mark_soon(self) -> None:
        """Mark what the fast path published, until nothing is left unmarked."""
        while self._unmarked:
            await asyncio.sleep(
                self._mark_after_s
            )  # a linger: the batches published meanwhile share the mark
            try:
                await self._mark(self._unmarked)
            except Exception as exc:  # kept: the next round marks them (or, if this process dies, a sweep)
                log.warning(
                    "outbox.mark_failed", actor=self.actor, count=len(self._unmarked), error=repr(exc)
                )

    async def _mark(self, sent: set[str]) -> None:
        """Mark ``sent`` sent in one round trip; they leave the set once that has succeeded."""
        ids = sorted(sent)
        if ids:
            await self._outbox.update_many({"_id": {"$in": ids}}, {"$set": {"sent_at": datetime.now(UTC)}})
            sent.difference_update(ids)

    async def _publish_each(self, entries: list[dict[str, Any]], sent: set[str], failures: list[str]) -> None:
        """Publish every entry at once: the confirms are awaited together, not one after another."""

        async def publish(entry: dict[str, Any]) -> None:
            try:
                # Entries written before traces were kept have none: they start a trace of their own.
                with continued(entry.get("trace")):
                    await publish_body(
                        self._broker,
                        entry["body"],
                        exchange=entry["exchange"],
                        routing_key=entry["routing_key"],
                        envelope=Envelope.model_validate(entry["envelope"]),
                    )
            except Exception as exc:  # collected and raised by _send, after noting what did go out
                failures.append(f"{entry['routing_key']} {entry['message_id']}: {exc!r}")
            else:
                sent.add(entry["message_id"])

        await asyncio.gather(*(publish(entry) for entry in entries))

    async def sweep(self, older_than: timedelta) -> int:
        """Republish the entries of unsent records created before now - older_than; returns how
        many entries.

        Replicas of an actor sweep the same outbox: each first claims what is due (one update of
        every unclaimed record, or one whose claim has lapsed because its sweeper died), then
        publishes only what it claimed, so two sweepers never publish one record side by side."""
        now = datetime.now(UTC)
        unsent = {"sent_at": None}
        claim = new_id()
        claimed = await self._outbox.update_many(
            {
                **unsent,
                "created_at": {"$lte": now - older_than},
                "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now}}],
                "_id": {"$nin": sorted(self._in_flight | self._unmarked)},
            },
            {
                "$set": {
                    "claim": claim,
                    "claimed_until": now + max(_CLAIM_LEASE, 4 * timedelta(seconds=self._sweep_s)),
                }
            },
        )
        republished = 0
        if claimed.modified_count:
            try:
                while pending := await self._outbox.find(
                    {**unsent, "claim": claim}, sort=[("created_at", ASCENDING)]
                ).to_list(_SWEEP_BATCH):
                    sent: set[str] = set()
                    try:
                        await self._send(pending, sent)
                    finally:
                        await self._mark(sent)
                    republished += sum(len(record["entries"]) for record in pending)
            finally:
                # What could not be published is free again for the next sweep, here or elsewhere.
                await self._outbox.update_many({**unsent, "claim": claim}, {"$set": {"claimed_until": None}})
        await self._outbox.delete_many({"sent_at": {"$lt": now - _SENT_RETENTION}})
        oldest = await self._outbox.find_one(unsent, {"created_at": 1}, sort=[("created_at", ASCENDING)])
        metrics.OUTBOX_UNSENT.labels(self.actor).set(await self._unsent_entries())
        age = (now - oldest["created_at"].replace(tzinfo=UTC)).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_SECONDS.labels(self.actor).set(max(age, 0.0))
        return republished

    async def _unsent_entries(self) -> int:
        counted = self._outbox.aggregate(
            [
                {"$match": {"sent_at": None}},
                {"$group": {"_id": None, "entries": {"$sum": {"$size": "$entries"}}}},
            ]
        )
        totals = await (await counted).to_list()
        return int(totals[0]["entries"]) if totals else 0

    async def start(self) -> None:
        republished = await self.sweep(older_than=timedelta(0))
        if republished:
            log.warning("outbox.republished_at_start", actor=self.actor, count=republished)
        self._task = asyncio.create_task(self._sweep_forever(), name=f"{self.actor}-outbox-sweeper")

    async def stop(self) -> None:
        await _cancelled(self._task)
        self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                await self.sweep(older_than=timedelta(seconds=self._sweep_s))
            except Exception as exc:  # the sweeper must outlive a broker or database outage
                log.warning("outbox.sweep_failed", actor=self.actor, error=repr(exc))


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task, if there is one, and wait until it has ended."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
