"""The catalog actor: products, categories and prices."""

from datetime import UTC, datetime

from actors.catalog import domain
from actors.catalog.store import CatalogStore
from actors.runtime.actor import Actor, Work
from actors.runtime.errors import RuleViolation
from brokers.contracts.catalog import (
    ChangePrice,
    CreateProduct,
    GetProduct,
    ListProducts,
    ProductPage,
    ProductView,
    UpdateProduct,
)
from brokers.envelope import Event

catalog = Actor("catalog", CatalogStore)


@catalog.handles(CreateProduct)
async def create_product(command: CreateProduct, work: Work[CatalogStore]) -> None:
    if await work.store.exists(command.product_id):
        raise RuleViolation(f"product {command.product_id} already exists")
    owner = await work.store.owner_of_sku(command.sku)
    product, created = domain.create_product(command, sku_taken_by=owner, now=datetime.now(UTC))
    await work.store.save(product)
    work.emit(created)


@catalog.handles(UpdateProduct)
async def update_product(command: UpdateProduct, work: Work[CatalogStore]) -> None:
    product = await work.store.get(command.product_id)
    updated = domain.update_product(product, command, now=datetime.now(UTC))
    if updated is not None:
        await work.store.save(updated)


@catalog.handles(ChangePrice)
async def change_price(command: ChangePrice, work: Work[CatalogStore]) -> None:
    product = await work.store.get(command.product_id)
    await _save_if_changed(work, *domain.change_price(product, command, now=datetime.now(UTC)))


async def _save_if_changed(work: Work[CatalogStore], product: domain.Product, event: Event | None) -> None:
    if event is not None:
        await work.store.save(product)
        work.emit(event)


@catalog.answers_to(GetProduct)
async def get_product(query: GetProduct, store: CatalogStore) -> ProductView:
    return (await store.get(query.product_id)).view()


@catalog.answers_to(ListProducts)
async def list_products(query: ListProducts, store: CatalogStore) -> ProductPage:
    products, total = await store.page(category=query.category, offset=query.offset, limit=query.limit)
    return ProductPage(
        items=[p.view() for p in products], total=total, offset=query.offset, limit=query.limit
    )
