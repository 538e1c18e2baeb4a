"""Inventory's data: a stock level per SKU and a reservation per order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from pymongo import UpdateOne

from actors.inventory.domain import Outcome, Reservation, Status, StockLevel
from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Store
from brokers.contracts.common import Line


def _level(doc: dict[str, Any]) -> StockLevel:
    return StockLevel(
        sku=doc["_id"],
        on_hand=doc["on_hand"],
        reserved=doc["reserved"],
        shipped=doc["shipped"],
        received=doc["received"],
    )


class InventoryStore(Store):
    @property
    def _stock(self):
        return self.db["stock"]

    @property
    def _reservations(self):
        return self.db["reservations"]

    async def add_sku(self, sku: str, product_id: str) -> None:
        await self._stock.update_one(
            {"_id": sku},
            {
                "$setOnInsert": {
                    "product_id": product_id,
                    "on_hand": 0,
                    "reserved": 0,
                    "shipped": 0,
                    "received": 0,
                }
            },
            upsert=True,
            session=self.session,
        )

    async def levels(self, skus: Iterable[str]) -> dict[str, StockLevel]:
        docs = await self._stock.find({"_id": {"$in": list(skus)}}, session=self.session).to_list()
        return {doc["_id"]: _level(doc) for doc in docs}

    async def level(self, sku: str) -> StockLevel:
        doc = await self._stock.find_one({"_id": sku}, session=self.session)
        if doc is None:
            raise NotFound(f"SKU {sku} is not in inventory")
        return _level(doc)

    async def page(self, *, offset: int, limit: int) -> tuple[list[StockLevel], int]:
        docs = (
            await self._stock.find({}, session=self.session)
            .sort("_id", 1)
            .skip(offset)
            .limit(limit)
            .to_list()
        )
        return [_level(doc) for doc in docs], await self._stock.count_documents({}, session=self.session)

    async def reservation(self, order_id: str) -> Reservation | None:
        doc = await self._reservations.find_one({"_id": order_id}, session=self.session)
        if doc is None:
            return None
        return Reservation(doc["_id"], tuple(Line(**line) for line in doc["lines"]), Status(doc["status"]))

    async def save_levels(self, before: dict[str, StockLevel], after: dict[str, StockLevel]) -> None:
        """Write new levels, each only if the level is still what the decision was based on (one
        round trip for all of them)."""
        updates = []
        for sku in sorted(after):
            was, now = asdict(before[sku]), asdict(after[sku])
            was["_id"] = was.pop("sku")
            now.pop("sku")
            updates.append(UpdateOne(was, {"$set": now}))
        if not updates:
            return
        result = await self._stock.bulk_write(updates, session=self.session)
        if result.matched_count != len(updates):
            raise ConcurrentUpdate(f"stock of {', '.join(sorted(after))} changed while it was being updated")

    async def apply(self, before: dict[str, StockLevel], outcome: Outcome) -> None:
        await self.save_levels(before, outcome.levels)
        if outcome.reservation is not None:
            r = outcome.reservation
            await self._reservations.replace_one(
                {"_id": r.order_id},
                {"lines": [line.model_dump() for line in r.lines], "status": str(r.status)},
                upsert=True,
                session=self.session,
            )
