"""Operators' routes: the analytics actor's figures, and users (look one up, deactivate one).

A deactivation is a command to identity; the edge waits a moment for its outcome, so that a refused
one (an administrator naming themselves, the last active administrator) is a 409 saying why.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse

from brokers.contracts.analytics import GetStats, Stats
from brokers.contracts.common import EntityId
from brokers.contracts.identity import DeactivateUser, Deactivation, GetDeactivation, GetUser, UserView
from brokers.registration import poll
from edge.auth import Admin, admin
from edge.guard import Write
from edge.problems import DEACTIVATION_REFUSED, Refused, problem_responses
from edge.routes.shared import Accepted, Link, RequestId, dispatch, read_problems

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin)])
UserId = Annotated[EntityId, Path(description="The user's id, as answered by registration.")]
# How long a deactivation waits for identity's outcome before answering 202 instead.
DEACTIVATION_WAIT_S = 5.0


class DeactivationRefused(Exception):
    """Identity refused the deactivation; the message says why."""


@router.get(
    "/stats",
    summary="Orders by status, cancellations by reason, revenue, top products, saga durations",
    responses=read_problems(401, 403),
)
async def stats(query: Annotated[GetStats, Query()], link: Link, request_id: RequestId) -> Stats:
    return await link.ask(query, Stats, correlation_id=request_id)


@router.get("/users/{user_id}", summary="A user", responses=read_problems(401, 403, 404))
async def user(user_id: UserId, link: Link, request_id: RequestId) -> UserView:
    return await link.ask(GetUser(user_id=user_id), UserView, correlation_id=request_id)


@router.post(
    "/users/{user_id}/deactivate",
    response_model=Deactivation,
    summary="Deactivate a user: no more logins, and the tokens already issued stop working",
    description="Not yourself, and not the last active administrator (409).",
    responses={
        202: {"model": Accepted, "description": "Sent; identity has not applied it yet"},
        **problem_responses(401, 403, 409, 422, 503, 504),
    },
)
async def deactivate_user(
    user_id: UserId, principal: Admin, write: Write, link: Link, response: Response
) -> Deactivation | JSONResponse:
    command = DeactivateUser(
        deactivation_id=write.new_entity_id("deactivation"), user_id=user_id, requested_by=principal.user_id
    )
    location = f"/admin/users/{user_id}"
    envelope = await dispatch(link, command, write, response, location=location)
    outcome = GetDeactivation(deactivation_id=command.deactivation_id)
    try:
        done = await poll(
            lambda: link.ask(outcome, Deactivation, correlation_id=write.correlation_id),
            timeout_s=DEACTIVATION_WAIT_S,
            refused=DeactivationRefused,
        )
    except DeactivationRefused as exc:
        title = "The user cannot be deactivated"
        raise Refused(409, str(exc), type_=DEACTIVATION_REFUSED, title=title) from exc
    if done is None:
        accepted = Accepted.of(envelope).model_dump()
        return JSONResponse(accepted, status_code=202, headers={"Location": location})
    return done
