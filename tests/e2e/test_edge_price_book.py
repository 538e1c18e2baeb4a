"""Placing an order asks no actor anything once the edge knows its SKUs' prices (edge/prices.py), on
the real catalog, inventory and orders actors: the edge's own replica prices the lines, and a retry
is answered from the orders the edge placed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prometheus_client import REGISTRY

from brokers.contracts.catalog import ListProducts
from brokers.contracts.inventory import GetStock
from brokers.contracts.orders import GetOrder, PlaceOrder, QuoteOrder
from brokers.settings import Settings
from brokers.topology import QUERIES
from edge.app import create_app
from edge.observe import REQUEST_ID_HEADER
from tests.e2e.orders_support import new_key, place, priced_sku, wait_for_order
from tests.e2e.support import User, assert_problem, create_product, edge_settings, serving
from tests.helpers import Tap, eventually

SHOP = ("catalog", "inventory", "orders")
# What placing an order asked before the price book: is it known, are its SKUs, what does it cost.
QUESTIONS = (GetOrder.TYPE, GetStock.TYPE, QuoteOrder.TYPE)
BY = ("price_book", "actors")


@asynccontextmanager
async def edge_that_knows(settings: Settings, *skus: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an edge started now, once its price book knows ``skus``: their product.created
    went by before it subscribed, so it read them from the catalog."""
    app = create_app(edge_settings(settings))
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10.0) as later:

        async def known() -> bool:
            await asyncio.sleep(0)
            return len(app.state.price_book.prices_of(skus)) == len(skus)

        await eventually(known, what=f"the new edge's price book to know {', '.join(skus)}")
        yield later


def _checks() -> Counter[str]:
    """The edge's new-order checks so far, by who priced the lines (this process's edges)."""
    return Counter(
        {by: REGISTRY.get_sample_value("emporium_edge_order_checks_total", {"by": by}) or 0 for by in BY}
    )


async def _questions_until_marker(edge: httpx.AsyncClient, tap: Tap, since: int) -> tuple[list[str], int]:
    """The questions the tap saw from message ``since`` on, up to a marker query sent now: the edge
    asks over one channel, so whatever it asked before the marker reached the tap before it."""
    marker = await edge.get("/products", params={"limit": 1})
    assert marker.status_code == 200, marker.text
    request_id = marker.headers[REQUEST_ID_HEADER]

    async def marker_seen() -> int | None:
        await asyncio.sleep(0)
        for i, message in enumerate(tap.messages[since:], start=since):
            if message.type == ListProducts.TYPE and message.correlation_id == request_id:
                return i
        return None

    at = await eventually(marker_seen, until=lambda i: i is not None, what="the marker query")
    assert at is not None
    asked = [m.type or "" for m in tap.messages[since:at] if m.type in QUESTIONS]
    return asked, at + 1


async def test_an_edge_started_after_a_product_prices_it_and_places_its_orders_without_asking(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, settings: Settings, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin, price_cents=1250)
    async with (
        edge_that_knows(settings, sku) as later,
        Tap(settings.rabbitmq_url, QUERIES, (*QUESTIONS, ListProducts.TYPE)) as tap,
    ):
        key = new_key()
        checks_before = _checks()

        first = await place(later, ann, [{"sku": sku, "quantity": 2}], key)
        checks_after_first = _checks()
        asked_to_place, seen = await _questions_until_marker(later, tap, 0)
        order = await wait_for_order(later, ann, first.json()["order_id"])
        _, seen = await _questions_until_marker(later, tap, seen)
        again = await place(later, ann, [{"sku": sku, "quantity": 2}], key)
        other_lines = await place(later, ann, [{"sku": sku, "quantity": 3}], key)
        asked_on_retries, _ = await _questions_until_marker(later, tap, seen)

    assert first.status_code == 202, first.text
    assert asked_to_place == [], "placing an order of a known SKU asked an actor"
    # What operators see of it (emporium_edge_order_checks_total): priced by the book, asked of nobody.
    assert checks_after_first - checks_before == Counter(price_book=1)
    assert (order["total_cents"], order["currency"]) == (2500, "EUR")
    assert again.status_code == 202 and again.json() == first.json()
    assert assert_problem(other_lines, 409)["type"] == "urn:emporium:problem:idempotency-key-reused"
    assert asked_on_retries == [], "a retry of an order this edge placed asked an actor"
    # The retries sent nothing: one PlaceOrder, the first's.
    sent = await command_tap.wait_for(PlaceOrder.TYPE)
    assert [m.message_id for m in sent] == [first.json()["message_id"]]


async def test_lines_in_two_currencies_are_refused_422_by_the_price_book_without_asking(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, settings: Settings, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    euros = (await create_product(edge, admin, price_cents=1250))["sku"]
    dollars = (await create_product(edge, admin, price_cents=900, currency="USD"))["sku"]
    async with (
        edge_that_knows(settings, euros, dollars) as later,
        Tap(settings.rabbitmq_url, QUERIES, (*QUESTIONS, ListProducts.TYPE)) as tap,
    ):
        mixed = await place(later, ann, [{"sku": euros, "quantity": 1}, {"sku": dollars, "quantity": 1}])
        marker = await place(later, ann, [{"sku": dollars, "quantity": 1}])
        asked, _ = await _questions_until_marker(later, tap, 0)

    [refusal] = assert_problem(mixed, 422)["errors"]
    assert refusal == {
        "location": "body.lines",
        "message": "lines are priced in EUR, USD: an order is paid in one currency",
    }
    assert marker.status_code == 202, marker.text
    assert asked == []
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=1)
    assert [m.message_id for m in sent] == [marker.json()["message_id"]]
