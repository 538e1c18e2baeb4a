"""What happens around every handler: the part of the runtime each message goes through.

Work (commands and events): envelope and body are validated, then the message is applied with the
others waiting (actors.runtime.batches): in ONE transaction the handler changes state, its events go
to the outbox and the inbox records the message id (a message seen before is acked and skipped).
Only once that has committed and the outbox is published is the message acked. Failures are sorted
(actors.runtime.errors): permanent ones go to the dead-letter queue at once, anything else is retried
through the delay queues and dead-lettered when the retries are spent.

Queries: read through the store, answered on the reply-to address; a problem is an answer too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, TypeAdapter
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from actors.runtime import metrics
from actors.runtime.actor import Actor, Work
from actors.runtime.batches import Delivery, GroupCommit
from actors.runtime.errors import PERMANENT, NotFound, RuleViolation, dead_letter_reason
from actors.runtime.outbox import OutboxRelay
from brokers import tracing
from brokers.deadletters import Reason, attempts_so_far, dead_letter, retry_later
from brokers.envelope import Envelope, Event, InvalidMessage
from brokers.rpc import Problem, Reply
from brokers.settings import Settings
from brokers.topology import ActorTopology

log = structlog.get_logger()
_ANY = TypeAdapter(Any)


@contextmanager
def _handling(message: AbstractIncomingMessage, actor: str, service: str) -> Iterator[None]:
    """While an actor handles a message: its log lines carry the actor and the message's ids, and
    what it traces is the actor's service."""
    with (
        structlog.contextvars.bound_contextvars(
            actor=actor,
            type=message.type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        ),
        tracing.serving(service),
    ):
        yield


def read_envelope(message: AbstractIncomingMessage) -> Envelope:
    return Envelope.from_amqp(
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        headers=dict(message.headers or {}),
    )


class WorkConsumer:
    def __init__(
        self,
        actor: Actor[Any],
        topology: ActorTopology,
        broker: RabbitBroker,
        client: AsyncMongoClient,
        db: AsyncDatabase,
        relay: OutboxRelay | None,
        settings: Settings,
    ) -> None:
        self.actor, self.topology, self.broker, self.db = actor, topology, broker, db
        self.commits = GroupCommit(actor, topology, client, db, relay, settings)
        self._log_messages = settings.emporium_log_messages
        self._service = tracing.actor_service(actor.name)

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        type_ = self._type_label(message)
        with (
            # What handling it traces (this span, the retries and dead letters it publishes) is the actor's.
            _handling(message, self.actor.name, self._service),
            # One span per message handled, in the trace the message carried in (when tracing is on).
            tracing.TRACER.start_as_current_span(
                f"{self.actor.name} handle {type_}",
                attributes=_span_attributes(self.actor.name, type_, message),
            ),
        ):
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        envelope: Envelope | None = None
        try:
            envelope = read_envelope(message)
            contract, handler = self.actor.handler_for(envelope)
            payload = contract.parse(message.body)
            started = time.perf_counter()
            delivery = Delivery(envelope, payload, handler, attempts_so_far(message) + 1, message)
            work = await self.commits.apply(delivery)
            # From delivery to commit and publish: the time in its batch included.
            metrics.HANDLER_SECONDS.labels(self.actor.name, envelope.type).observe(
                time.perf_counter() - started
            )
        except PERMANENT as exc:
            await self._dead_letter(message, envelope, dead_letter_reason(exc), exc)
            return
        except Exception as exc:  # not known to be permanent: retry it later, then dead-letter
            await self._retry_or_dead_letter(message, envelope, exc)
            return
        await message.ack()
        self._count(envelope.type, "duplicate" if work is None else "applied")
        if work is not None:
            await self._observe(work.emitted)

    async def _observe(self, emitted: list[tuple[Event, Envelope]]) -> None:
        """Count what the committed transaction emitted and show it to the actor's observers."""
        for event, envelope in emitted:
            metrics.EVENTS_PUBLISHED.labels(self.actor.name, event.TYPE).inc()
            for observe in self.actor.observers.get(event.TYPE, ()):
                try:
                    await observe(event, envelope, self.actor.store(self.db))
                except Exception as exc:  # a lost observation must not fail a message already applied
                    log.warning("metrics.observe_failed", observer=observe.__qualname__, error=repr(exc))

    def _count(self, type_: str, outcome: str, error: Exception | None = None) -> None:
        metrics.MESSAGES.labels(self.actor.name, type_, outcome).inc()
        if self._log_messages:  # the actor, type and ids are bound to the line already
            log.info("message.handled", outcome=outcome, **({"error": repr(error)} if error else {}))
        span = trace.get_current_span()
        span.set_attribute("emporium.outcome", outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, f"{outcome}: {type(error).__name__}")

    async def _transact(
        self, envelope: Envelope, payload: Any, handler: Any, attempt: int = 1
    ) -> Work[Any] | None:
        """Apply one message alone, in its own transaction, without publishing what it emitted (the
        outbox keeps it): its committed work, or None when it had been applied before."""
        [outcome] = await self.commits.commit([Delivery(envelope, payload, handler, attempt)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _retry_or_dead_letter(
        self, message: AbstractIncomingMessage, envelope: Envelope | None, exc: Exception
    ) -> None:
        attempts = attempts_so_far(message) + 1
        retry_queue = self.topology.retry_queue(attempts)
        if retry_queue is None:
            await self._dead_letter(message, envelope, Reason.RETRIES_EXHAUSTED, exc, attempts)
            return
        log.warning("message.retry_scheduled", attempt=attempts, retry_queue=retry_queue, error=repr(exc))
        await self._settle(message, retry_later(self.broker, message, retry_queue, attempts, repr(exc)))
        self._count(self._type_label(message), "retried", exc)

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        envelope: Envelope | None,
        reason: Reason,
        exc: Exception,
        attempts: int | None = None,
    ) -> None:
        attempts = attempts if attempts is not None else attempts_so_far(message) + 1
        log.warning("message.dead_lettered", reason=str(reason), attempts=attempts, error=str(exc))
        origin = self.topology.work_address
        await self._settle(
            message,
            dead_letter(
                self.broker,
                message,
                origin_queue=origin,
                dlq=self.topology.dlq,
                reason=reason,
                attempts=attempts,
                error=f"{type(exc).__name__}: {exc}",
            ),
        )
        self._count(self._type_label(message), "dead_lettered", exc)

    def _type_label(self, message: AbstractIncomingMessage) -> str:
        # Only known types become label values: a hostile sender must not grow the metric set.
        return message.type if message.type in self.actor.handlers else "unknown"

    @staticmethod
    async def _settle(message: AbstractIncomingMessage, move: Any) -> None:
        """Ack the original only once its copy is confirmed where it is going."""
        try:
            await move
        except Exception:  # no confirmed copy: the queue's own dead-lettering takes it instead
            await message.reject(requeue=False)
            raise
        await message.ack()


class QueryConsumer:
    def __init__(self, actor: Actor[Any], broker: RabbitBroker, db: AsyncDatabase) -> None:
        self.actor, self.broker, self.db = actor, broker, db
        self._service = tracing.actor_service(actor.name)

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with _handling(message, self.actor.name, self._service):  # the reply's span is the actor's
            await self._answer(message)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        type_ = message.type if message.type in self.actor.answers else "unknown"
        outcome: metrics.QueryOutcome  # the series start_at_zero made
        try:
            envelope = read_envelope(message)
            contract, answer = self.actor.answer_for(envelope)
            data = await answer(contract.parse(message.body), self.actor.store(self.db))
            reply: Reply[Any] = Reply(ok=True, data=_plain(data))
            outcome = "answered"
        except InvalidMessage as exc:
            reply, outcome = Reply(ok=False, problem=Problem.of(400, str(exc))), "invalid"
        except NotFound as exc:
            reply, outcome = Reply(ok=False, problem=Problem.of(404, str(exc))), "not_found"
        except RuleViolation as exc:
            reply, outcome = Reply(ok=False, problem=Problem.of(409, str(exc))), "refused"
        except Exception as exc:  # answered as a 503 and logged: the caller must not hang
            log.exception("query.failed")
            detail = f"{self.actor.name} could not answer {type_}: {type(exc).__name__}"
            reply, outcome = Reply(ok=False, problem=Problem.of(503, detail)), "failed"
        metrics.QUERIES.labels(self.actor.name, type_, outcome).inc()
        if message.reply_to:
            await self.broker.publish(
                reply.model_dump_json().encode(),
                exchange="",
                routing_key=message.reply_to,
                correlation_id=message.message_id,
                # The reply's own type (as the AsyncAPI document names it), which names its span too.
                message_type=f"{type_}.reply",
                content_type="application/json",
                persist=True,
                # The asker may have given up and gone: a reply nobody receives is not an error.
                mandatory=False,
            )
        await message.ack()


def _span_attributes(actor: str, type_: str, message: AbstractIncomingMessage) -> dict[str, str]:
    attributes = {
        "emporium.actor": actor,
        "emporium.message.type": type_,
        "messaging.message.id": message.message_id,
        "messaging.message.conversation_id": message.correlation_id,
    }
    # A message may lack an id (a hostile or broken sender): OpenTelemetry refuses None values.
    return {name: value for name, value in attributes.items() if value is not None}


def _plain(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return _ANY.dump_python(data, mode="json")
