"""The outbox: events written in the handler's transaction, published after commit.

A transaction adds one outbox record: the messages it applied (the inbox: a unique index on their
ids makes a copy's transaction fail, see actors.runtime.batches) and all of its entries, the
messages its handlers sent. The embedded MongoDB's cost is per command and per document: one
record is one insert and one mark, where an inbox record per message applied and an entry per
message sent would be some 40 document writes for one batch, in two inserts. A record is kept for
the dedupe window after it was sent (a TTL index on ``sent_at``), so the ids it applied are
remembered as long as a copy may come.

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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from faststream.rabbit import RabbitBroker
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from actors.runtime import metrics
from brokers.envelope import Envelope, Message, new_id
from brokers.factory import publish_body
from brokers.settings import Settings
from brokers.topology import MOVES, exchange_for
from brokers.tracing import actor_service, continued, current_carrier, serving

log = structlog.get_logger()
# Records a sweeper publishes at once (each holds up to a batch of entries).
_SWEEP_BATCH = 20
# How long a sweeper's claim on records keeps other sweepers off them (at least four sweeps).
_CLAIM_LEASE = timedelta(seconds=30)
# How long the fast path's published records wait to be marked sent with the ones after them.
_MARK_AFTER_S = 0.2
# The indexes that make the records the inbox too.
APPLIED_ONCE = "applied_once"
INBOX_EXPIRY = "expire_after_dedupe_window"
_INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
# Message ids of an old inbox moved into one record.
_MOVED_AT_ONCE = 1_000


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


def outbox_record(
    entries: list[dict[str, Any]], applied: Sequence[tuple[str, str]] = (), *, at: datetime | None = None
) -> dict[str, Any]:
    """What one transaction adds to the outbox: the messages it applied (message id, type) and its
    entries, in the order they were sent (a record with nothing to send is sent already)."""
    at = at or datetime.now(UTC)
    return {
        "_id": new_id(),
        "applied": [{"message_id": message_id, "type": type_} for message_id, type_ in applied],
        "entries": entries,
        "created_at": at,
        "sent_at": None if entries else at,
    }


async def applied_among(db: AsyncDatabase, message_ids: Sequence[str]) -> set[str]:
    """Those of these message ids the actor has applied (within the dedupe window), in one round trip."""
    found = db["outbox"].find({"applied.message_id": {"$in": list(message_ids)}}, {"applied": 1})
    return {message["message_id"] for record in await found.to_list() for message in record["applied"]} & set(
        message_ids
    )


async def applied_messages(db: AsyncDatabase, **where: Any) -> list[dict[str, Any]]:
    """The messages an actor has applied within the dedupe window (``message_id``, ``type``) that
    match ``where``; for tests and operators, not the hot path."""
    return await _unwound(db, "applied", where)


async def outbox_entries(db: AsyncDatabase, **where: Any) -> list[dict[str, Any]]:
    """The entries in an actor's outbox, oldest record first, that match ``where`` (entry fields:
    ``routing_key="order.placed"``, say); for tests and operators, not the hot path."""
    return await _unwound(db, "entries", where)


async def _unwound(db: AsyncDatabase, part: str, where: Mapping[str, Any]) -> list[dict[str, Any]]:
    pipeline: list[dict[str, Any]] = [
        {"$sort": {"created_at": ASCENDING}},
        {"$unwind": f"${part}"},
        {"$replaceRoot": {"newRoot": f"${part}"}},
    ]
    if where:
        pipeline.append({"$match": dict(where)})
    return await (await db["outbox"].aggregate(pipeline)).to_list()


async def _prepare_inbox(db: AsyncDatabase, settings: Settings) -> None:
    """The inbox is the outbox records' lists of messages applied: a message id is in one record
    at most (a unique index), and is forgotten once no copy of it can come any more (the dedupe
    window, EMPORIUM_INBOX_RETENTION_S, counted from when the record was sent), so the outbox does
    not grow for ever; the server's TTL monitor deletes the records, about once a minute."""
    outbox, window = db["outbox"], settings.emporium_inbox_retention_s
    await outbox.create_index(
        "applied.message_id",
        name=APPLIED_ONCE,
        unique=True,
        # Records from before they listed what they applied have no ids to index.
        partialFilterExpression={"applied.message_id": {"$exists": True}},
    )
    try:
        await outbox.create_index("sent_at", name=INBOX_EXPIRY, expireAfterSeconds=window)
    except OperationFailure as exc:
        if exc.code not in _INDEX_CONFLICTS:
            raise
        # The window was changed: the index is made again (collMod would need more than readWrite).
        await outbox.drop_index(INBOX_EXPIRY)
        await outbox.create_index("sent_at", name=INBOX_EXPIRY, expireAfterSeconds=window)
    await _move_old_inbox(db)


async def _move_old_inbox(db: AsyncDatabase) -> None:
    """An inbox from before the outbox records held it (a document per message id) moves into
    records, so that a copy of a message applied before the upgrade is still known. Replicas doing
    it at once, or one crashing halfway, each move only what is not in a record yet."""
    old, outbox = db["inbox"], db["outbox"]
    while rows := await old.find({}, sort=[("_id", 1)]).to_list(_MOVED_AT_ONCE):
        ids = [row["_id"] for row in rows]
        moved = await applied_among(db, ids)
        if left := [row for row in rows if row["_id"] not in moved]:
            applied = [(row["_id"], row.get("type", "")) for row in left]
            # Kept as long as the newest of them needs.
            newest = max(row.get("at") or datetime.now(UTC) for row in left)
            try:
                await outbox.insert_one(outbox_record([], applied, at=newest))
            except DuplicateKeyError:
                continue  # another replica moved some of them meanwhile: look again
        await old.delete_many({"_id": {"$in": ids}})
    await db.drop_collection("inbox")


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
    async def prepare(db: AsyncDatabase, settings: Settings) -> None:
        """The outbox's indexes (its records are the inbox too: without them a copy of a message
        would be applied again), and an outbox or inbox of an older shape brought up to date."""
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
        await _prepare_inbox(db, settings)

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
