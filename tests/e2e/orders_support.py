"""What the order tests through the edge share: priced products, orders of signed-in customers, and SSE reading."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import REGISTRY

from brokers.settings import Settings
from ops.invariants import check
from ops.payment_provider import SimulatorControl
from tests.e2e.support import User, create_product, messages_taken, wait_for_json
from tests.helpers import eventually


def new_key() -> str:
    return f"order-{uuid.uuid4().hex}"


async def sku_orders_price(edge: httpx.AsyncClient, admin: User, price_cents: int = 1299) -> str:
    """A product created through the edge, whose price the orders actor has learnt; its SKU."""
    learnt = await messages_taken("orders", "product.created", "applied")
    sku = (await create_product(edge, admin, price_cents=price_cents))["sku"]
    await eventually(
        lambda: messages_taken("orders", "product.created", "applied"),
        until=lambda now: now > learnt,
        what="orders to learn the price",
    )
    return sku


async def priced_sku(edge: httpx.AsyncClient, admin: User, price_cents: int = 1299) -> str:
    """Like ``sku_orders_price``, once inventory knows the SKU too."""
    sku = await sku_orders_price(edge, admin, price_cents)
    await wait_for_json(edge, f"/inventory/{sku}")
    return sku


async def stocked_sku(edge: httpx.AsyncClient, admin: User, quantity: int = 5) -> str:
    """Like ``priced_sku``, with ``quantity`` on hand, so that the saga does not cancel orders of it."""
    sku = await priced_sku(edge, admin)
    restock = await edge.post(f"/inventory/{sku}/restock", json={"quantity": quantity}, headers=admin.headers)
    assert restock.status_code == 202, restock.text
    await wait_for_json(edge, f"/inventory/{sku}", until=lambda stock: stock["on_hand"] == quantity)
    return sku


async def place(
    edge: httpx.AsyncClient, customer: User, lines: list[dict[str, Any]], key: str | None = None
) -> httpx.Response:
    return await edge.post(
        "/orders",
        json={"lines": lines},
        headers=customer.with_headers(**{"Idempotency-Key": key or new_key()}),
    )


async def placed_order(
    edge: httpx.AsyncClient, customer: User, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Place an order and wait until its customer can read it; its view."""
    response = await place(edge, customer, lines)
    assert response.status_code == 202, response.text
    return await wait_for_order(edge, customer, response.json()["order_id"])


async def wait_for_order(
    edge: httpx.AsyncClient, customer: User, order_id: str, until: Any = lambda order: True
) -> dict[str, Any]:
    """The order as the orders actor has it (not the edge's "accepted" answer before), once ``until`` holds."""

    async def fetch() -> httpx.Response:
        return await edge.get(f"/orders/{order_id}", headers=customer.headers)

    def applied(response: httpx.Response) -> bool:
        return response.status_code == 200 and response.json()["status"] != "accepted"

    response = await eventually(
        fetch, until=lambda r: applied(r) and until(r.json()), what=f"order {order_id}"
    )
    return response.json()


async def queries_answered(actor: str, type_: str, outcome: str) -> float:
    """How many queries of a type an actor of this process answered with that outcome."""
    labels = {"actor": actor, "type": type_, "outcome": outcome}
    return REGISTRY.get_sample_value("emporium_queries_total", labels) or 0.0


@dataclass(frozen=True)
class Sse:
    """One Server-Sent Event as a client sees it."""

    event: str | None
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of a text/event-stream response until it ends (comment lines are skipped)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield Sse(_one(fields, "event"), _one(fields, "id"), "\n".join(fields.get("data", [])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


SETTLED = {"delivered", "cancelled"}


@dataclass
class Shop:
    edge: httpx.AsyncClient
    provider: SimulatorControl
    settings: Settings

    async def order(self, customer: User, sku: str, quantity: int = 1, key: str | None = None) -> str:
        response = await place(self.edge, customer, [{"sku": sku, "quantity": quantity}], key)
        assert response.status_code == 202, response.text
        return response.json()["order_id"]

    async def settled(
        self, customer: User, order_id: str, status: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the order is delivered or cancelled (or reaches ``status``); its view."""
        wanted = {status} if status else SETTLED

        async def fetch() -> httpx.Response:
            return await self.edge.get(f"/orders/{order_id}", headers=customer.headers)

        response = await eventually(
            fetch,
            until=lambda r: r.status_code == 200 and r.json()["status"] in wanted,
            timeout=timeout,
            what=f"order {order_id} to be {' or '.join(sorted(wanted))}",
        )
        return response.json()

    async def stock(self, sku: str) -> dict[str, int]:
        return (await self.edge.get(f"/inventory/{sku}")).json()

    async def timeline(self, customer: User, order_id: str) -> dict[str, Any]:
        response = await self.edge.get(f"/orders/{order_id}/timeline", headers=customer.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def assert_invariants_hold(self) -> None:
        """The invariants hold once the saga is quiet (compensations may still be on their way)."""
        report = await eventually(
            lambda: check(self.settings, grace=timedelta(seconds=5)),
            until=lambda r: r.clean,
            what="a clean invariant check",
        )
        assert report.orders > 0


OpenShop = Callable[..., Awaitable[Shop]]  # the open_shop fixture (tests/e2e/conftest.py)
