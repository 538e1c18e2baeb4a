"""Shipping's data: one shipment document per order (keyed by order id, versioned), stopped ones included.

Everything shipping decides about an order is written to that one document, inserted at version 1
or updated only from the version it was read at: rival decisions conflict instead of both committing.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from actors.runtime.errors import ConcurrentUpdate, NotFound
from actors.runtime.store import Store
from actors.shipping.domain import Shipment, Status, Step


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
    @property
    def _shipments(self):
        return self.db["shipments"]

    @classmethod
    async def prepare(cls, db) -> None:
        await db["shipments"].create_index("shipment_id", unique=True)

    async def find(self, order_id: str) -> Shipment | None:
        doc = await self._shipments.find_one({"_id": order_id}, session=self.session)
        return None if doc is None else _shipment(doc)

    async def get(self, order_id: str) -> Shipment:
        shipment = await self.find(order_id)
        if shipment is None:
            raise NotFound(f"no shipment for order {order_id}")
        return shipment

    async def save(self, shipment: Shipment) -> None:
        """Insert a new shipment, or update one only if it is still the version the change started from."""
        doc = _document(shipment)
        if shipment.version == 1:
            try:
                await self._shipments.insert_one({"_id": shipment.order_id, **doc}, session=self.session)
            except DuplicateKeyError as exc:
                raise ConcurrentUpdate(
                    f"shipment of order {shipment.order_id} was created meanwhile"
                ) from exc
            return
        result = await self._shipments.update_one(
            {"_id": shipment.order_id, "version": shipment.version - 1}, {"$set": doc}, session=self.session
        )
        if result.matched_count != 1:
            raise ConcurrentUpdate(f"shipment of order {shipment.order_id} changed while being updated")
