"""The inventory actor: stock per SKU, reservations for orders."""

from actors.inventory import domain
from actors.inventory.store import InventoryStore
from actors.runtime.actor import Actor, Work
from brokers.contracts.catalog import ProductCreated
from brokers.contracts.common import Line
from brokers.contracts.inventory import GetStock, ListStock, Restock, StockPage, StockView
from brokers.contracts.orders import OrderCancelled, OrderPlaced
from brokers.contracts.shipping import ShipmentDispatched

inventory = Actor("inventory", InventoryStore)


@inventory.handles(ProductCreated)
async def add_sku(event: ProductCreated, work: Work[InventoryStore]) -> None:
    await work.store.add_sku(event.sku, event.product_id)


@inventory.handles(Restock)
async def restock(command: Restock, work: Work[InventoryStore]) -> None:
    levels = await work.store.levels([command.sku])
    restocked = domain.restock(levels.get(command.sku), command.sku, command.quantity)
    await work.store.save_levels(levels, {command.sku: restocked})


@inventory.handles(OrderPlaced)
async def reserve_stock(event: OrderPlaced, work: Work[InventoryStore]) -> None:
    lines = domain.combine(Line(sku=line.sku, quantity=line.quantity) for line in event.lines)
    levels = await work.store.levels(line.sku for line in lines)
    existing = await work.store.reservation(event.order_id)
    await _apply(work, levels, domain.reserve(event.order_id, lines, levels, existing))


@inventory.handles(OrderCancelled)
async def release_stock(event: OrderCancelled, work: Work[InventoryStore]) -> None:
    existing = await work.store.reservation(event.order_id)
    levels = await work.store.levels(line.sku for line in existing.lines) if existing else {}
    await _apply(work, levels, domain.release(event.order_id, existing, levels))


@inventory.handles(ShipmentDispatched)
async def commit_stock(event: ShipmentDispatched, work: Work[InventoryStore]) -> None:
    existing = await work.store.reservation(event.order_id)
    levels = await work.store.levels(line.sku for line in existing.lines) if existing else {}
    await _apply(work, levels, domain.commit(event.order_id, existing, levels))


async def _apply(
    work: Work[InventoryStore], levels: dict[str, domain.StockLevel], outcome: domain.Outcome
) -> None:
    await work.store.apply(levels, outcome)
    if outcome.event is not None:
        work.emit(outcome.event)


@inventory.answers_to(GetStock)
async def get_stock(query: GetStock, store: InventoryStore) -> StockView:
    return (await store.level(query.sku)).view()


@inventory.answers_to(ListStock)
async def list_stock(query: ListStock, store: InventoryStore) -> StockPage:
    levels, total = await store.page(offset=query.offset, limit=query.limit)
    return StockPage(
        items=[level.view() for level in levels], total=total, offset=query.offset, limit=query.limit
    )
