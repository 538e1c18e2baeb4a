"""The catalog's data: one document per product."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pymongo import ASCENDING

from actors.catalog.domain import Product
from actors.runtime.errors import NotFound
from actors.runtime.store import Store

PRODUCTS = "products"


def _product(doc: dict[str, Any]) -> Product:
    doc = dict(doc)
    return Product(product_id=doc.pop("_id"), **doc)


class CatalogStore(Store):
    @classmethod
    async def prepare(cls, db) -> None:
        await db[PRODUCTS].create_index("sku", unique=True)
        await db[PRODUCTS].create_index([("category", ASCENDING), ("_id", ASCENDING)])

    async def get(self, product_id: str) -> Product:
        doc = await self.db[PRODUCTS].find_one({"_id": product_id}, session=self.session)
        if doc is None:
            raise NotFound(f"product {product_id} does not exist")
        return _product(doc)

    async def exists(self, product_id: str) -> bool:
        return (
            await self.db[PRODUCTS].find_one({"_id": product_id}, {"_id": 1}, session=self.session)
            is not None
        )

    async def owner_of_sku(self, sku: str) -> str | None:
        doc = await self.db[PRODUCTS].find_one({"sku": sku}, {"_id": 1}, session=self.session)
        return doc["_id"] if doc else None

    async def save(self, product: Product) -> None:
        doc = asdict(product)
        await self.db[PRODUCTS].replace_one(
            {"_id": doc.pop("product_id")}, doc, upsert=True, session=self.session
        )

    async def page(self, *, category: str | None, offset: int, limit: int) -> tuple[list[Product], int]:
        where = {} if category is None else {"category": category}
        docs = (
            await self.db[PRODUCTS]
            .find(where, session=self.session)
            .sort("_id", ASCENDING)
            .skip(offset)
            .limit(limit)
            .to_list()
        )
        return [_product(d) for d in docs], await self.db[PRODUCTS].count_documents(
            where, session=self.session
        )
