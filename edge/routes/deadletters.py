"""Operators' dead-letter routes: how many, what they are, send them back, or drop them.

The same operations as ``emporium dlq`` (brokers.dlq), on the actors' dead-letter queues and
unrouted-events only: a queue is named from the list of actors, so nothing else in RabbitMQ can be
reached through here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from brokers import dlq
from brokers.contracts import OWNERS
from brokers.contracts.common import EntityId
from brokers.deadletters import DeadLetter
from brokers.settings import Settings
from brokers.topology import UNROUTED_EVENTS, dlq_name
from edge.auth import admin
from edge.guard import settings_of
from edge.problems import problem_responses
from edge.routes.shared import Body

router = APIRouter(prefix="/admin/dead-letters", tags=["admin"], dependencies=[Depends(admin)])
CurrentSettings = Annotated[Settings, Depends(settings_of)]

DeadLetterQueue = StrEnum(  # type: ignore[misc]
    "DeadLetterQueue",
    {name: name for name in (*(dlq_name(actor) for actor in sorted(OWNERS)), UNROUTED_EVENTS.name)},
)
QueueName = Annotated[
    DeadLetterQueue,
    Path(
        description="An actor's dead-letter queue, `<actor>.dlq`, or `unrouted-events` (events no queue "
        "was bound for; replayed, they are published again under their type)."
    ),
]
PROBLEMS = problem_responses(401, 403, 404, 422, 503)


class QueueDepth(BaseModel):
    queue: str
    messages: int


class DeadLetterView(BaseModel):
    """A dead letter as an operator reads it (its body as text, secrets already removed)."""

    origin_queue: str
    reason: str
    attempts: int
    error: str
    dead_lettered_at: str
    message_id: str | None
    correlation_id: str | None
    type: str | None
    body: str
    redacted: str = Field("", description="Secret fields removed when it was parked; it cannot be replayed.")

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        fields = {name: getattr(letter, name) for name in cls.model_fields if name != "body"}
        return cls(**fields, body=dlq.pretty_body(letter.body))


class Replay(Body):
    message_id: EntityId | None = Field(None, description="Only this dead letter; all of them when left out.")


class Replayed(BaseModel):
    replayed: list[str] = Field(description="Message ids sent back to their origin queues.")


class Purged(BaseModel):
    purged: int


async def _operate(operation):
    try:
        return await operation
    except dlq.NoSuchDeadLetter as exc:
        raise HTTPException(404, str(exc)) from exc
    except dlq.DlqError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get(
    "",
    summary="Every actor's dead-letter queue, and unrouted-events, with the messages each holds",
    responses=PROBLEMS,
)
async def list_queues(settings: CurrentSettings) -> list[QueueDepth]:
    depths = await _operate(dlq.depths(settings, [queue.value for queue in DeadLetterQueue]))
    return [QueueDepth(queue=depth.name, messages=depth.messages) for depth in depths]


@router.get("/{queue}", summary="The dead letters at the head of a queue (left in place)", responses=PROBLEMS)
async def show(
    queue: QueueName, settings: CurrentSettings, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> list[DeadLetterView]:
    return [DeadLetterView.of(letter) for letter in await _operate(dlq.peek(settings, queue.value, limit))]


@router.post(
    "/{queue}/replay",
    summary="Send dead letters back to the queue they failed in, with a fresh retry budget",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def replay(queue: QueueName, body: Replay, settings: CurrentSettings) -> Replayed:
    letters = await _operate(dlq.replay(settings, queue.value, message_id=body.message_id))
    return Replayed(replayed=[letter.message_id or "" for letter in letters])


@router.delete("/{queue}", summary="Drop every dead letter in a queue", responses=PROBLEMS)
async def purge(queue: QueueName, settings: CurrentSettings) -> Purged:
    return Purged(purged=await _operate(dlq.purge(settings, queue.value)))
