"""Group commit: the deliveries waiting for an actor applied in one MongoDB transaction.

The embedded MongoDB's cost is per transaction and per round trip, not per document: a transaction
that applies 32 messages (their handlers in delivery order, sharing one store that reads for them
all at once and writes once at the end, and one outbox record holding every message they applied
and sent) commits in little more time than one that applies one.
So a work consumer hands its deliveries to a ``GroupCommit``, which takes what is waiting (up to
``EMPORIUM_BATCH_SIZE``, lingering ``EMPORIUM_BATCH_WAIT_MS`` for more), applies it in one
transaction, publishes what it emitted (pipelined: every confirm awaited together) and only then
lets the consumers ack.

Batches run one at a time per consumer, so the handlers of one process never run side by side:
messages about one entity are applied in the order they were delivered, and they cannot fight over
its documents. Replicas still can; their conflicts are the database's to find (every decision about
an entity writes its document). An actor whose handlers wait on something outside (payments on its
provider) may ask for lanes: batches side by side, each conversation (correlation id) always in the
same lane, so one order's messages still never run beside each other.

A handler may have a step outside the transaction (Actor.handles' ``asks``: a call to another
system, the payment provider's). The steps of a batch run side by side before it opens, so no
transaction waits on the outside world or outlives its time limit; their answers are the handlers'
``work.asked``, kept when the batch is applied again. A step that raises takes its message out of
the batch, as a handler that raises does. Such an actor's batch holds one message per conversation
(the others wait for the next batch): each step is asked about the state committed before the batch.

One message never fails the others. The transaction aborts whole; a copy applied before (its inbox
record exists) is then settled as a duplicate, a message whose handler raised leaves the batch to
be retried or dead-lettered on its own, and the messages before it and after it are applied again
as two batches, in that order (so many failures in one batch cost each good handler one re-run, not
one per failure).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import context as otel_context
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from actors.runtime import metrics
from actors.runtime.actor import Actor, Asking, Handler, Work
from actors.runtime.outbox import OutboxRelay, applied_among, outbox_record
from brokers.envelope import Envelope
from brokers.settings import Settings
from brokers.topology import ActorTopology

log = structlog.get_logger()
T = TypeVar("T")
# Where a batch failed when it was the store's flush, not one handler.
FLUSH = -1
# What applying one delivery came to: its work once committed, None for a copy applied before, or
# the exception that took it out of the batch (the consumer retries or dead-letters it).
Outcome = Work[Any] | None | Exception


@dataclass
class Delivery:
    """A message read and checked, waiting to be applied."""

    envelope: Envelope
    payload: Any
    handler: Handler
    attempt: int = 1
    message: AbstractIncomingMessage | None = None
    # The trace the message belongs to: what its handler emits continues it.
    trace: otel_context.Context = field(default_factory=otel_context.get_current)
    done: asyncio.Future[Outcome] | None = None


class GroupCommit:
    def __init__(
        self,
        actor: Actor[Any],
        topology: ActorTopology,
        client: AsyncMongoClient,
        db: AsyncDatabase,
        relay: OutboxRelay | None,
        settings: Settings,
    ) -> None:
        self.actor, self.topology, self.client, self.db = actor, topology, client, db
        self.relay, self.settings = relay, settings
        # One queue and one worker per lane; a conversation (correlation id) always takes the same lane.
        lanes, self._batch_size = actor.batching(settings)
        self._lanes: list[asyncio.Queue[Delivery]] = [asyncio.Queue() for _ in range(lanes)]
        self._workers: dict[int, asyncio.Task[None]] = {}

    async def apply(self, delivery: Delivery) -> Work[Any] | None:
        """Apply a delivery with whatever else is waiting in its lane; its work once committed and
        published, None for a copy applied before. Raises what took it out of its batch."""
        delivery.done = asyncio.get_running_loop().create_future()
        lane = zlib.crc32(delivery.envelope.correlation_id.encode()) % len(self._lanes)
        self._lanes[lane].put_nowait(delivery)
        worker = self._workers.get(lane)
        if worker is None or worker.done():
            # A context of its own: the worker must not run inside the first message's trace.
            self._workers[lane] = asyncio.create_task(
                self._apply_forever(self._lanes[lane]),
                name=f"{self.actor.name}-group-commit-{lane}",
                context=contextvars.Context(),
            )
        outcome = await delivery.done
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def stop(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()

    async def _apply_forever(self, waiting: asyncio.Queue[Delivery]) -> None:
        held: list[Delivery] = []  # taken from the lane, left for a later batch (see _next_batch)
        while True:
            batch = await self._next_batch(waiting, held)
            records: list[dict[str, Any]] = []
            try:
                outcomes = await self.commit(batch, records)
                await self._publish(records)
            except Exception as exc:  # nothing committed that is not recorded: each message is retried
                log.warning("batch.failed", size=len(batch), error=repr(exc))
                outcomes = [exc] * len(batch)
            for delivery, outcome in zip(batch, outcomes, strict=True):
                if delivery.done is not None and not delivery.done.done():
                    delivery.done.set_result(outcome)

    async def _next_batch(self, waiting: asyncio.Queue[Delivery], held: list[Delivery]) -> list[Delivery]:
        """What is waiting, up to the batch size, the deliveries held over from before first.

        An actor with outside steps takes one delivery per conversation into a batch: the steps
        all run before the batch, on the state committed then, so a second message of one order
        would be asked about a state its batch has already moved past (and be asked again). The
        ones left are held, in their order, for the batches after."""
        batch: list[Delivery] = []
        later: list[Delivery] = []
        conversations: set[str] = set()

        def take(delivery: Delivery) -> None:
            conversation = delivery.envelope.correlation_id
            if len(batch) >= self._batch_size or (self.actor.asks and conversation in conversations):
                later.append(delivery)
            else:
                conversations.add(conversation)
                batch.append(delivery)

        for delivery in held:
            take(delivery)
        if not batch:
            take(await waiting.get())
        linger = self.settings.emporium_batch_wait_ms / 1000
        deadline = asyncio.get_running_loop().time() + linger
        while len(batch) < self._batch_size:
            if not waiting.empty():
                take(waiting.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                take(await asyncio.wait_for(waiting.get(), left))
            except TimeoutError:
                break
        held[:] = later
        return batch

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        if not records or self.relay is None:
            return
        try:
            await self.relay.publish(records)
        except Exception as exc:  # committed and recorded: the sweeper publishes them later
            log.warning("outbox.publish_deferred", records=len(records), error=repr(exc))

    async def commit(
        self, deliveries: list[Delivery], records: list[dict[str, Any]] | None = None
    ) -> list[Outcome]:
        """Apply the deliveries in one transaction, taking out those that cannot be applied (each
        with its outcome) and applying the rest again, until what is left has committed. The
        outbox records committed are added to ``records``, to be published.

        When a handler raises, the messages before it had been applied in that attempt: they are
        applied again as a batch of their own, and the messages after it as another, in that order.
        So every handler runs at most twice more than its own failures, however many fail."""
        outcomes: dict[int, Outcome] = {}
        first, ids = [], set()
        for i, delivery in enumerate(deliveries):
            if delivery.envelope.message_id in ids:  # two copies in one batch: the first one counts
                outcomes[i] = None
            else:
                ids.add(delivery.envelope.message_id)
                first.append(i)
        answers: dict[str, Any] = {}
        for i, answer in zip(first, await self._ask_outside([deliveries[i] for i in first]), strict=True):
            if isinstance(answer, Exception):  # it leaves the batch, to be retried or dead-lettered
                outcomes[i] = answer
            else:
                answers[deliveries[i].envelope.message_id] = answer
        first = [i for i in first if i not in outcomes]
        batches = [first] if first else []
        while batches:
            batch = batches.pop(0)
            failed: list[int] = []
            started = time.perf_counter()
            try:
                works, record = await self._transact([deliveries[i] for i in batch], failed, answers)
            except Exception as exc:
                again = await self._sort_out(deliveries, batch, failed, exc, outcomes)
                if again:
                    metrics.BATCHES_REDONE.labels(self.actor.name).inc()
                batches[:0] = again
                continue
            if record is not None and records is not None:
                records.append(record)
            metrics.TRANSACTION_SECONDS.labels(self.actor.name).observe(time.perf_counter() - started)
            metrics.BATCH_MESSAGES.labels(self.actor.name).observe(len(works))
            outcomes.update(zip(batch, works, strict=True))
        return [outcomes[i] for i in range(len(deliveries))]

    async def _ask_outside(self, deliveries: list[Delivery]) -> list[Any]:
        """Run the outside steps of the deliveries' handlers (Actor.handles' ``asks``), side by side
        and before any transaction: each answer, None where there is no such step, or what it raised."""

        asked = [d for d in deliveries if d.envelope.type in self.actor.asks]
        if not asked:
            return [None] * len(deliveries)
        # One store for the steps, reading what they are about at once (committed: no transaction).
        store = self.actor.store(self.db)
        await store.begin_batch([delivery.payload for delivery in asked])

        async def ask(delivery: Delivery) -> Any:
            step = self.actor.asks.get(delivery.envelope.type)
            if step is None:
                return None
            asking = Asking(
                store,
                delivery.envelope,
                self.settings,
                retries_left=self.topology.retry_queue(delivery.attempt) is not None,
            )
            return await _in_context_of(delivery, functools.partial(step, delivery.payload, asking))

        answers = await asyncio.gather(*(ask(d) for d in deliveries), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancelled (the host stopping): not one message's failure
        return list(answers)

    async def _sort_out(
        self,
        deliveries: list[Delivery],
        batch: list[int],
        failed: list[int],
        exc: Exception,
        outcomes: dict[int, Outcome],
    ) -> list[list[int]]:
        """After an aborted transaction: the deliveries that leave the batch get their outcome, and
        what is left is returned as the batches to apply next, in delivery order."""
        applied = await applied_among(self.db, [deliveries[i].envelope.message_id for i in batch])
        # A copy applied before fails on its inbox record at the latest, or its handler refuses a
        # fact already applied: it is a duplicate, and says nothing about the others.
        if duplicates := [i for i in batch if deliveries[i].envelope.message_id in applied]:
            outcomes.update(dict.fromkeys(duplicates))
            rest = [i for i in batch if i not in duplicates]
            # Not lost: applied again without the copies, what else failed fails again on its own.
            log.info(
                "batch.duplicates_taken_out", duplicates=len(duplicates), rest=len(rest), error=repr(exc)
            )
            return [rest] if rest else []
        if failed == [FLUSH]:
            # The store's held-back writes failed, for one of the messages it cannot name: halves
            # are tried apart until the one it is has a batch of its own.
            if len(batch) == 1:
                outcomes[batch[0]] = exc
                return []
            log.info("batch.flush_failed_split", size=len(batch), error=repr(exc))
            half = len(batch) // 2
            return [batch[:half], batch[half:]]
        if failed:
            position = failed[-1]
            outcomes[batch[position]] = exc
            return [part for part in (batch[:position], batch[position + 1 :]) if part]
        # Not one message's doing (the database away, say): all of them wait.
        outcomes.update(dict.fromkeys(batch, exc))
        return []

    async def _transact(
        self, deliveries: list[Delivery], failed: list[int], answers: dict[str, Any]
    ) -> tuple[list[Work[Any]], dict[str, Any] | None]:
        """One transaction: every handler in delivery order, then the outbox record of what they
        applied and sent (returned if they sent anything, to be published). ``failed`` gets the
        position of a handler that raised (FLUSH: the store's flush).

        The record is written last, and handlers write after they read and ask: a process killed
        inside a transaction leaves it open on the server until the server reaps it, and every
        document it wrote stays locked till then, the redelivered messages' ids included. Writing
        late keeps that window to the last few round trips. Copies applied before are not looked
        for first (a round trip for a rare case): their transaction fails, on the inbox's unique
        ids at the latest, and the inbox is read only then."""

        async def apply(session: AsyncClientSession) -> tuple[list[Work[Any]], dict[str, Any] | None]:
            failed.clear()
            works = []
            # One store for the batch: it reads for all of them at once and writes once at the end.
            store = self.actor.store(self.db, session)
            await store.begin_batch([delivery.payload for delivery in deliveries])
            for position, delivery in enumerate(deliveries):
                work = Work(
                    store,
                    delivery.envelope,
                    self.topology,
                    self.settings,
                    attempt=delivery.attempt,
                    asked=answers.get(delivery.envelope.message_id),
                )
                try:
                    await _in_context_of(
                        delivery, functools.partial(delivery.handler, delivery.payload, work)
                    )
                except Exception:
                    failed.append(position)
                    raise
                works.append(work)
            try:
                await store.flush()
            except Exception:
                failed.append(FLUSH)
                raise
            entries = [entry for work in works for entry in work.outbox]
            applied = [(delivery.envelope.message_id, delivery.envelope.type) for delivery in deliveries]
            record = outbox_record(entries, applied)
            await self.db["outbox"].insert_one(record, session=session)
            return works, record if entries else None

        async with self.client.start_session() as session:
            # with_transaction runs the whole callback again on transient transaction errors
            # (write conflicts with another replica's transaction included).
            return await session.with_transaction(apply)


async def _in_context_of(delivery: Delivery, call: Callable[[], Awaitable[T]]) -> T:
    """Run a handler in its message's trace and with its ids bound to the log lines it writes."""
    token = otel_context.attach(delivery.trace)
    try:
        envelope = delivery.envelope
        with structlog.contextvars.bound_contextvars(
            type=envelope.type, message_id=envelope.message_id, correlation_id=envelope.correlation_id
        ):
            return await call()
    finally:
        otel_context.detach(token)
