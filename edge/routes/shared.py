"""What the route modules share: request bodies' rules, the link, and the 202 answer of a write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self, TypedDict

from fastapi import Depends, Request, Response, params
from pydantic import BaseModel, ConfigDict

from brokers.envelope import Command, Envelope
from edge.auth import admin
from edge.guard import WriteIdentity
from edge.link import RabbitLink
from edge.observe import request_id
from edge.problems import problem_responses


class RouterOptions(TypedDict):
    """Options given to every route of a router (``include_router``'s keywords)."""

    dependencies: Sequence[params.Depends]
    responses: dict[int | str, dict[str, Any]]


class RouteOptions(RouterOptions):
    """Options of one route (a path operation's keywords)."""

    status_code: int


# Catalog and stock writes: administrators only (checked before the body is), and their problems.
WRITE: RouteOptions = {
    "status_code": 202,
    "dependencies": [Depends(admin)],
    "responses": problem_responses(401, 403, 422, 503),
}


def read_problems(*more: int) -> dict[int | str, dict[str, Any]]:
    """The problems a read can answer: invalid, RabbitMQ unreachable, no answer in time, and ``more``."""
    return problem_responses(*sorted((422, 503, 504, *more)))


class Body(BaseModel):
    """A request body: unknown fields are refused, like in the contracts the edge turns it into.

    Strict: a value must have its field's JSON type ("5" or 5.0 for an integer is refused, not
    converted), as the API documents.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, strict=True)


class QueryParameters(BaseModel):
    """A route's query parameters as one model: unknown ones refused, text converted (it is all text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Accepted(BaseModel):
    """The command is queued for its actor (confirmed by RabbitMQ); its effect follows shortly."""

    status: Literal["accepted"] = "accepted"
    message_id: str
    correlation_id: str

    @classmethod
    def of(cls, envelope: Envelope, **fields: Any) -> Self:
        return cls(message_id=envelope.message_id, correlation_id=envelope.correlation_id, **fields)


async def link_of(request: Request) -> RabbitLink:
    return request.app.state.link


Link = Annotated[RabbitLink, Depends(link_of)]
RequestId = Annotated[str, Depends(request_id)]


async def dispatch(
    link: RabbitLink, command: Command, write: WriteIdentity, response: Response, *, location: str
) -> Envelope:
    """Send a write's command; answer with where its effect will be visible."""
    envelope = write.envelope_for(command)
    await link.send(command, envelope)
    response.headers["Location"] = location
    return envelope
