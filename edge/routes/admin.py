"""Operators' routes: the analytics actor's figures, and users (look one up, deactivate one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from brokers.contracts.analytics import GetStats, Stats
from brokers.contracts.common import EntityId
from brokers.contracts.identity import DeactivateUser, GetUser, UserView
from edge.auth import admin
from edge.guard import Write
from edge.problems import problem_responses
from edge.routes.shared import Accepted, Link, RequestId, dispatch, read_problems

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin)])
UserId = Annotated[EntityId, Path(description="The user's id, as answered by registration.")]


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
    status_code=202,
    summary="Deactivate a user: no more logins, and the tokens already issued stop working",
    responses=problem_responses(401, 403, 422, 503),
)
async def deactivate_user(user_id: UserId, write: Write, link: Link, response: Response) -> Accepted:
    command = DeactivateUser(user_id=user_id)
    return Accepted.of(await dispatch(link, command, write, response, location=f"/admin/users/{user_id}"))
