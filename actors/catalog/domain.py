"""Catalog rules: products, their categories and prices. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from actors.runtime.errors import RuleViolation
from brokers.contracts.catalog import (
    ChangePrice,
    CreateProduct,
    ProductCreated,
    ProductPriceChanged,
    ProductView,
    UpdateProduct,
)


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str
    name: str
    description: str
    category: str
    price_cents: int
    currency: str
    created_at: datetime
    updated_at: datetime

    def view(self) -> ProductView:
        return ProductView(**self.__dict__)


def create_product(
    command: CreateProduct, *, sku_taken_by: str | None, now: datetime
) -> tuple[Product, ProductCreated]:
    if sku_taken_by is not None:
        raise RuleViolation(f"SKU {command.sku} already belongs to product {sku_taken_by}")
    product = Product(
        product_id=command.product_id,
        sku=command.sku,
        name=command.name,
        description=command.description,
        category=command.category,
        price_cents=command.price_cents,
        currency=command.currency,
        created_at=now,
        updated_at=now,
    )
    return product, ProductCreated(
        product_id=product.product_id,
        sku=product.sku,
        name=product.name,
        category=product.category,
        price_cents=product.price_cents,
        currency=product.currency,
    )


def update_product(product: Product, command: UpdateProduct, *, now: datetime) -> Product | None:
    """The product with the command's changes, or None when it changes nothing.

    No event: no other actor keeps a product's name, description or category (they are read from
    catalog), so one would only be parked in unrouted-events.
    """
    changes = command.model_dump(exclude={"product_id"}, exclude_none=True)
    updated = replace(product, **changes)
    if updated == product:
        return None
    return replace(updated, updated_at=now)


def change_price(
    product: Product, command: ChangePrice, *, now: datetime
) -> tuple[Product, ProductPriceChanged | None]:
    if command.price_cents == product.price_cents:
        return product, None
    changed = replace(product, price_cents=command.price_cents, updated_at=now)
    return changed, ProductPriceChanged(
        product_id=product.product_id,
        sku=product.sku,
        old_price_cents=product.price_cents,
        price_cents=changed.price_cents,
        currency=product.currency,
    )
