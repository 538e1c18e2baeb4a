"""Catalog: products, categories and prices."""

from datetime import datetime

from pydantic import Field

from brokers.contracts.common import DEFAULT_CURRENCY, Cents, Currency, EntityId, Name, Sku, Value
from brokers.envelope import Command, Event, Query

Category = Name
Description = Field("", max_length=4000)


class CreateProduct(Command, type="catalog.create_product"):
    product_id: EntityId
    sku: Sku
    name: Name
    description: str = Description
    category: Category
    price_cents: Cents
    currency: Currency = DEFAULT_CURRENCY


class UpdateProduct(Command, type="catalog.update_product"):
    product_id: EntityId
    name: Name | None = None
    description: str | None = Field(None, max_length=4000)
    category: Category | None = None


class ChangePrice(Command, type="catalog.change_price"):
    product_id: EntityId
    price_cents: Cents


class ProductCreated(Event, type="product.created"):
    product_id: EntityId
    sku: Sku
    name: Name
    category: Category
    price_cents: Cents
    currency: Currency

    def partition_key(self) -> str:
        return self.sku  # inventory opens the SKU's stock in the partition of its reservations


class ProductPriceChanged(Event, type="product.price_changed"):
    product_id: EntityId
    sku: Sku
    old_price_cents: Cents
    price_cents: Cents
    currency: Currency


class ProductView(Value):
    product_id: EntityId
    sku: Sku
    name: str
    description: str
    category: str
    price_cents: int
    currency: str
    created_at: datetime
    updated_at: datetime


class ProductPage(Value):
    items: list[ProductView]
    total: int
    offset: int
    limit: int


class GetProduct(Query, type="catalog.get_product"):
    product_id: EntityId


class ListProducts(Query, type="catalog.list_products"):
    category: Category | None = None
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(20, ge=1, le=100)
