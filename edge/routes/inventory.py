"""Stock per SKU: reads ask the inventory actor, restocks send it commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import Field

from brokers.contracts.common import Quantity, Sku
from brokers.contracts.inventory import GetStock, Restock, StockView
from edge.guard import Write
from edge.problems import problem_responses
from edge.routes.shared import (
    WRITE,
    Accepted,
    Body,
    Link,
    RequestId,
    RouteOptions,
    dispatch,
    read_problems,
)

router = APIRouter(prefix="/inventory", tags=["inventory"])
SkuPath = Annotated[Sku, Path(description="The SKU: upper-case letters, digits and dashes.")]


class RestockRequest(Body):
    quantity: Quantity = Field(examples=[25])


class RestockAccepted(Accepted):
    sku: str


@router.get("/{sku}", summary="Stock of one SKU", responses=read_problems(404))
async def get_stock(sku: SkuPath, link: Link, request_id: RequestId) -> StockView:
    return await link.ask(GetStock(sku=sku), StockView, correlation_id=request_id)


# A write that asks inventory first (see restock): its 404 and 504 too.
_RESTOCK: RouteOptions = {**WRITE, "responses": problem_responses(401, 403, 404, 422, 503, 504)}


@router.post(
    "/{sku}/restock",
    summary="Receive stock for a SKU (its product must exist: the SKU is known from product.created)",
    **_RESTOCK,
)
async def restock(
    sku: SkuPath, body: RestockRequest, write: Write, link: Link, response: Response
) -> RestockAccepted:
    # Asked first, so a SKU inventory does not know is a 404 now rather than a dead letter later
    # (a product created a moment ago may not have reached inventory yet: retry then).
    await link.ask(GetStock(sku=sku), StockView, correlation_id=write.correlation_id)
    command = Restock(sku=sku, quantity=body.quantity)
    envelope = await dispatch(link, command, write, response, location=f"{router.prefix}/{sku}")
    return RestockAccepted.of(envelope, sku=sku)
