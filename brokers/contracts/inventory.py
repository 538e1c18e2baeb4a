"""Inventory: stock per SKU and reservations for orders."""

from pydantic import Field

from brokers.contracts.common import EntityId, Line, Quantity, Shortage, Sku, Value
from brokers.envelope import Command, Event, Query


class Restock(Command, type="inventory.restock"):
    sku: Sku
    quantity: Quantity

    def partition_key(self) -> str:
        return self.sku


class StockReserved(Event, type="stock.reserved"):
    order_id: EntityId
    lines: list[Line]


class StockRejected(Event, type="stock.rejected"):
    order_id: EntityId
    shortages: list[Shortage] = Field(min_length=1)


class StockReleased(Event, type="stock.released"):
    order_id: EntityId
    lines: list[Line]


class StockCommitted(Event, type="stock.committed"):
    order_id: EntityId
    lines: list[Line]


class GetStock(Query, type="inventory.get_stock"):
    sku: Sku


class StockView(Value):
    sku: Sku
    on_hand: int
    reserved: int
    shipped: int
    received: int


class StockPage(Value):
    items: list[StockView]
    total: int
    offset: int
    limit: int


class ListStock(Query, type="inventory.list_stock"):
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(100, ge=1, le=500)
