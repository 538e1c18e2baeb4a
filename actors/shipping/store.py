"""Shipping's data: one shipment document per order (keyed by order id, versioned), stopped ones included.

Everything shipping decides about an order is written to that one document, inserted at version 1
or updated only from the version it was read at: rival decisions conflict instead of both committing.
In a batch (``preload``), the shipments of every order its messages name are read in one round trip
and written at the end in one (``flush``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Held, Store, Versioned, ids_named, write_versions
from actors.shipping.domain import Shipment, Status, Step

SHIPMENTS = "shipments"


def _shipment(doc: dict[str, Any]) -> Shipment:
    return Shipment(
        shipment_id=doc["shipment_id"],
        order_id=doc["_id"],
        customer_id=doc["customer_id"],
        carrier=doc["carrier"],
        tracking_number=doc["tracking_number"],
        history=tuple(Step(Status(step["status"]), step["at"]) for step in doc["history"]),
        cancelled_at=doc.get("cancelled_at"),
        version=doc["version"],
    )


def _document(shipment: Shipment) -> dict[str, Any]:
    return {
        "shipment_id": shipment.shipment_id,
        "customer_id": shipment.customer_id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "history": [{"status": str(step.status), "at": step.at} for step in shipment.history],
        "cancelled_at": shipment.cancelled_at,
        "version": shipment.version,
    }


class ShippingStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._held: Held[Shipment | None] = Held()

    @classmethod
    async def prepare(cls, db) -> None:
        await db[SHIPMENTS].create_index("shipment_id", unique=True)

    async def preload(self, messages: Sequence[object]) -> None:
        if order_ids := ids_named(messages):
            await self._read(order_ids)

    async def flush(self) -> None:
        changes = [
            Versioned(now.order_id, was.version if was else 0, _document(now))
            for was, now in self._held.changed()
            if now is not None
        ]
        if changes:
            await write_versions(self.db[SHIPMENTS], changes, session=self.session, what="shipment")
            self._held.written()

    async def _read(self, order_ids: Sequence[str]) -> dict[str, Shipment | None]:
        return await self.read_held(self._held, SHIPMENTS, order_ids, _shipment)

    async def find(self, order_id: str) -> Shipment | None:
        if order_id in self._held:
            return self._held[order_id]
        return (await self._read([order_id]))[order_id]

    async def get(self, order_id: str) -> Shipment:
        shipment = await self.find(order_id)
        if shipment is None:
            raise NotFound(f"no shipment for order {order_id}")
        return shipment

    async def save(self, shipment: Shipment) -> None:
        """Insert a new shipment, or update one only if it is still the version the change started from."""
        if self.batched:
            if shipment.order_id not in self._held:
                await self._read([shipment.order_id])
            current = self._held[shipment.order_id]
            if (current.version if current else 0) != shipment.version - 1:
                raise ConcurrentUpdate(
                    f"shipment of order {shipment.order_id} changed while being decided on"
                )
            self._held[shipment.order_id] = shipment
            return
        await write_versions(
            self.db[SHIPMENTS],
            [Versioned(shipment.order_id, shipment.version - 1, _document(shipment))],
            session=self.session,
            what="shipment",
        )
