"""Operators' reads: the analytics actor's figures over every order and payment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from brokers.contracts.analytics import GetStats, Stats
from edge.guard import require_dev_admin
from edge.routes.shared import Link, RequestId, read_problems

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_dev_admin)])


@router.get(
    "/stats",
    summary="Orders by status, cancellations by reason, revenue, top products, saga durations",
    responses=read_problems(401),
)
async def stats(query: Annotated[GetStats, Query()], link: Link, request_id: RequestId) -> Stats:
    return await link.ask(query, Stats, correlation_id=request_id)
