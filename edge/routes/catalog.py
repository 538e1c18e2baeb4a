"""Products: reads ask the catalog actor, writes send it commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import Field, model_validator

from brokers.contracts.catalog import (
    Category,
    ChangePrice,
    CreateProduct,
    Description,
    GetProduct,
    ListProducts,
    ProductPage,
    ProductView,
    UpdateProduct,
)
from brokers.contracts.common import DEFAULT_CURRENCY, Cents, Currency, EntityId, Name, Sku
from edge.guard import Write
from edge.routes.shared import WRITE, Accepted, Body, Link, RequestId, dispatch, read_problems

router = APIRouter(prefix="/products", tags=["catalog"])
ProductId = Annotated[EntityId, Path(description="The product's id, as returned when it was created.")]


class NewProduct(Body):
    sku: Sku = Field(examples=["MUG-BLUE-350"])
    name: Name = Field(examples=["Blue mug, 350 ml"])
    description: str = Description
    category: Category = Field(examples=["kitchen"])
    price_cents: Cents = Field(examples=[1299])
    currency: Currency = DEFAULT_CURRENCY


class ProductChanges(Body):
    """Only the fields given change; at least one must be given."""

    name: Name | None = None
    description: str | None = Field(None, max_length=4000)
    category: Category | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> ProductChanges:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one of name, description, category")
        return self


class NewPrice(Body):
    price_cents: Cents = Field(examples=[1499])


class ProductAccepted(Accepted):
    product_id: str


def _location(product_id: str) -> str:
    return f"{router.prefix}/{product_id}"


@router.get("", summary="List products, optionally of one category", responses=read_problems())
async def list_products(
    query: Annotated[ListProducts, Query()], link: Link, request_id: RequestId
) -> ProductPage:
    return await link.ask(query, ProductPage, correlation_id=request_id)


@router.get("/{product_id}", summary="One product", responses=read_problems(404))
async def get_product(product_id: ProductId, link: Link, request_id: RequestId) -> ProductView:
    return await link.ask(GetProduct(product_id=product_id), ProductView, correlation_id=request_id)


@router.post("", summary="Create a product (the edge chooses its id)", **WRITE)
async def create_product(body: NewProduct, write: Write, link: Link, response: Response) -> ProductAccepted:
    product_id = write.new_entity_id("product")
    command = CreateProduct(product_id=product_id, **body.model_dump())
    envelope = await dispatch(link, command, write, response, location=_location(product_id))
    return ProductAccepted.of(envelope, product_id=product_id)


@router.patch("/{product_id}", summary="Change a product's name, description or category", **WRITE)
async def update_product(
    product_id: ProductId, body: ProductChanges, write: Write, link: Link, response: Response
) -> ProductAccepted:
    command = UpdateProduct(product_id=product_id, **body.model_dump(exclude_none=True))
    envelope = await dispatch(link, command, write, response, location=_location(product_id))
    return ProductAccepted.of(envelope, product_id=product_id)


@router.patch("/{product_id}/price", summary="Change a product's price", **WRITE)
async def change_price(
    product_id: ProductId, body: NewPrice, write: Write, link: Link, response: Response
) -> ProductAccepted:
    command = ChangePrice(product_id=product_id, price_cents=body.price_cents)
    envelope = await dispatch(link, command, write, response, location=_location(product_id))
    return ProductAccepted.of(envelope, product_id=product_id)
