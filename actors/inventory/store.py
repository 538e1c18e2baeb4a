"""Inventory's data: a stock level per SKU and a reservation per order.

In a batch (``preload``), the reservations of the orders its messages name and the levels of every
SKU they touch are read in two round trips; new levels (each only if the level is still what was
read) and reservations are written at the end in two (``flush``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.inventory.domain import Outcome, Reservation, Status, StockLevel
from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Held, Store, ids_named
from brokers.contracts.common import Line
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import OrderPlaced

STOCK, RESERVATIONS = "stock", "reservations"


def _level(doc: dict[str, Any]) -> StockLevel:
    return StockLevel(
        sku=doc["_id"],
        on_hand=doc["on_hand"],
        reserved=doc["reserved"],
        shipped=doc["shipped"],
        received=doc["received"],
    )


def _reservation(doc: dict[str, Any]) -> Reservation:
    return Reservation(doc["_id"], tuple(Line(**line) for line in doc["lines"]), Status(doc["status"]))


def _compare_and_set(was: StockLevel, now: StockLevel) -> UpdateOne:
    """The write of a new level that only applies if the level is still what it was."""
    before, after = asdict(was), asdict(now)
    before["_id"] = before.pop("sku")
    after.pop("sku")
    return UpdateOne(before, {"$set": after})


class InventoryStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._levels: Held[StockLevel | None] = Held()
        self._held_reservations: Held[Reservation | None] = Held()

    async def preload(self, messages: Sequence[object]) -> None:
        order_ids = ids_named(messages)
        reservations = await self._read_reservations(order_ids) if order_ids else {}
        skus = {line.sku for r in reservations.values() if r is not None for line in r.lines}
        for message in messages:
            if isinstance(message, OrderPlaced):
                skus.update(line.sku for line in message.lines)
            elif isinstance(message, Restock):
                skus.add(message.sku)
        if skus:
            await self.levels(skus)

    async def flush(self) -> None:
        if levels := [
            (was, now) for was, now in self._levels.changed() if was is not None and now is not None
        ]:
            await self._write_levels(
                [_compare_and_set(was, now) for was, now in levels], [now.sku for _, now in levels]
            )
            self._levels.written()
        if reservations := [now for _, now in self._held_reservations.changed() if now is not None]:
            await self.db[RESERVATIONS].bulk_write(
                [ReplaceOne({"_id": r.order_id}, _reservation_doc(r), upsert=True) for r in reservations],
                session=self.session,
            )
            self._held_reservations.written()

    async def _write_levels(self, updates: list[UpdateOne], skus: Iterable[str]) -> None:
        result = await self.db[STOCK].bulk_write(updates, session=self.session)
        if result.matched_count != len(updates):
            raise ConcurrentUpdate(f"stock of {', '.join(sorted(skus))} changed while it was being updated")

    async def add_sku(self, sku: str, product_id: str) -> None:
        if self.batched and sku in self._levels and self._levels[sku] is None:
            del self._levels[sku]  # known missing in this batch: read again once it is there
        await self.db[STOCK].update_one(
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
        wanted = set(skus)
        known = {sku: self._levels[sku] for sku in wanted if sku in self._levels}
        if missing := sorted(wanted - known.keys()):
            found = await self.db[STOCK].find({"_id": {"$in": missing}}, session=self.session).to_list()
            read = dict.fromkeys(missing) | {doc["_id"]: _level(doc) for doc in found}
            if self.batched:
                self._levels.loaded(read)
            known.update(read)
        return {sku: level for sku, level in known.items() if level is not None}

    async def level(self, sku: str) -> StockLevel:
        doc = await self.db[STOCK].find_one({"_id": sku}, session=self.session)
        if doc is None:
            raise NotFound(f"SKU {sku} is not in inventory")
        return _level(doc)

    async def page(self, *, offset: int, limit: int) -> tuple[list[StockLevel], int]:
        docs = (
            await self.db[STOCK]
            .find({}, session=self.session)
            .sort("_id", 1)
            .skip(offset)
            .limit(limit)
            .to_list()
        )
        return [_level(doc) for doc in docs], await self.db[STOCK].count_documents({}, session=self.session)

    async def _read_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation | None]:
        return await self.read_held(self._held_reservations, RESERVATIONS, order_ids, _reservation)

    async def reservation(self, order_id: str) -> Reservation | None:
        if order_id in self._held_reservations:
            return self._held_reservations[order_id]
        return (await self._read_reservations([order_id]))[order_id]

    async def save_levels(self, before: dict[str, StockLevel], after: dict[str, StockLevel]) -> None:
        """Write new levels, each only if the level is still what the decision was based on (one
        round trip for all of them; in a batch, one for the whole batch at its flush)."""
        if not after:
            return
        if self.batched:
            if any(sku not in self._levels or self._levels[sku] != before[sku] for sku in after):
                raise ConcurrentUpdate(
                    f"stock of {', '.join(sorted(after))} changed while it was being decided on"
                )
            self._levels.update(after)
            return
        await self._write_levels([_compare_and_set(before[sku], after[sku]) for sku in sorted(after)], after)

    async def apply(self, before: dict[str, StockLevel], outcome: Outcome) -> None:
        await self.save_levels(before, outcome.levels)
        if (r := outcome.reservation) is None:
            return
        if self.batched:
            if r.order_id not in self._held_reservations:
                await self.reservation(r.order_id)
            self._held_reservations[r.order_id] = r
            return
        await self.db[RESERVATIONS].replace_one(
            {"_id": r.order_id}, _reservation_doc(r), upsert=True, session=self.session
        )


def _reservation_doc(r: Reservation) -> dict[str, Any]:
    return {"lines": [line.model_dump() for line in r.lines], "status": str(r.status)}
