"""Moving a message to a retry queue or a dead-letter queue, and back.

A copy is published (persistent, confirmed, mandatory) before the original is acked, so a crash in
between can only duplicate, never lose; duplicates are absorbed by the consumer's inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, HeadersType
from faststream.rabbit import RabbitBroker

from brokers.envelope import REGISTRY, without_secrets
from brokers.topology import EVENTS, MOVES, UNROUTED_EVENTS

ORIGIN = "x-origin-queue"
REASON = "x-reason"
ATTEMPTS = "x-attempts"
ERROR = "x-error"
DEAD_AT = "x-dead-lettered-at"
# Set on a dead letter parked without its secret fields: it cannot be replayed as it is.
REDACTED_FIELDS = "x-redacted"
_BOOKKEEPING = (ORIGIN, REASON, ATTEMPTS, ERROR, DEAD_AT, REDACTED_FIELDS)
_ERROR_LIMIT = 2_000


class Reason(StrEnum):
    INVALID_MESSAGE = "invalid-message"
    RULE_VIOLATION = "rule-violation"
    CORRUPT_DATA = "corrupt-data"
    RETRIES_EXHAUSTED = "retries-exhausted"


def attempts_so_far(message: AbstractIncomingMessage) -> int:
    """Failed attempts recorded on the message by earlier retries (0 on first delivery)."""
    value = (message.headers or {}).get(ATTEMPTS, 0)
    return value if isinstance(value, int) and value >= 0 else 0


async def _republish(
    broker: RabbitBroker,
    message: AbstractIncomingMessage,
    queue: str,
    headers: dict[str, Any],
    body: bytes | None = None,
    *,
    exchange: str = MOVES.name,
) -> None:
    await broker.publish(
        message.body if body is None else body,
        exchange=exchange,
        routing_key=queue,
        persist=True,
        mandatory=True,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        message_type=message.type,
        timestamp=message.timestamp,
        headers=headers,
    )


def _without_bookkeeping(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {k: v for k, v in (message.headers or {}).items() if k not in _BOOKKEEPING and k != "x-death"}


async def retry_later(
    broker: RabbitBroker, message: AbstractIncomingMessage, retry_queue: str, attempts: int, error: str
) -> None:
    headers = {**_without_bookkeeping(message), ATTEMPTS: attempts, ERROR: error[:_ERROR_LIMIT]}
    await _republish(broker, message, retry_queue, headers)


async def dead_letter(
    broker: RabbitBroker,
    message: AbstractIncomingMessage,
    *,
    origin_queue: str,
    dlq: str,
    reason: Reason,
    attempts: int,
    error: str,
) -> None:
    headers = {
        **_without_bookkeeping(message),
        ORIGIN: origin_queue,
        REASON: str(reason),
        ATTEMPTS: attempts,
        ERROR: error[:_ERROR_LIMIT],
        DEAD_AT: datetime.now(UTC).isoformat(),
    }
    body = without_secrets(message.type, message.body)
    if body is not None:
        headers[REDACTED_FIELDS] = ",".join(sorted(REGISTRY[str(message.type)].SECRETS))
    await _republish(broker, message, dlq, headers, body)


def _latest_death(headers: HeadersType) -> HeadersType:
    """RabbitMQ's x-death entry for the latest dead-lettering (it puts that one first); empty when
    the header is missing or not the table of tables RabbitMQ writes."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


@dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to know about a message in a DLQ."""

    origin_queue: str
    reason: str
    attempts: int
    error: str
    dead_lettered_at: str
    message_id: str | None
    correlation_id: str | None
    type: str | None
    body: bytes
    # Secret fields removed when it was parked (see brokers.envelope.without_secrets); empty if none.
    redacted: str = ""

    @classmethod
    def read(cls, message: AbstractIncomingMessage, dlq: str) -> DeadLetter:
        headers = message.headers or {}
        # What the message itself carries, however it came to be parked.
        carried: dict[str, Any] = {
            "message_id": message.message_id,
            "correlation_id": message.correlation_id,
            "type": message.type,
            "body": message.body,
        }
        if ORIGIN in headers:
            return cls(
                origin_queue=str(headers[ORIGIN]),
                reason=str(headers.get(REASON, "")),
                attempts=attempts_so_far(message),
                error=str(headers.get(ERROR, "")),
                dead_lettered_at=str(headers.get(DEAD_AT, "")),
                **carried,
                redacted=str(headers.get(REDACTED_FIELDS, "")),
            )
        if dlq == UNROUTED_EVENTS.name:
            # Parked by the events exchange (through its alternate exchange), not by a consumer.
            return cls(
                origin_queue=EVENTS.name,
                reason="unrouted",
                attempts=0,
                error="no queue was bound for its type when it was published",
                dead_lettered_at=message.timestamp.isoformat() if message.timestamp else "",
                **carried,
            )
        # Dead-lettered by RabbitMQ itself (delivery limit reached, rejected): it keeps x-death.
        death = _latest_death(headers)
        count = death.get("count")
        return cls(
            origin_queue=str(death.get("queue", dlq.removesuffix(".dlq"))),
            reason=str(death.get("reason", "unknown")),
            attempts=count if isinstance(count, int) and count > 0 else 1,
            error="dead-lettered by RabbitMQ",
            dead_lettered_at=str(death.get("time", "")),
            **carried,
        )


async def replay(broker: RabbitBroker, message: AbstractIncomingMessage, origin_queue: str) -> None:
    """Send a dead letter back to its origin queue with a fresh retry budget."""
    await _republish(broker, message, origin_queue, _without_bookkeeping(message))


async def publish_again(broker: RabbitBroker, message: AbstractIncomingMessage) -> None:
    """Publish an unrouted event again, under its type: the queues bound for it since then take it
    (with none yet, it is parked in unrouted-events again)."""
    await _republish(broker, message, str(message.type), dict(message.headers or {}), exchange=EVENTS.name)
