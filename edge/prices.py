"""The edge's replica of the catalog's prices, so that placing an order is checked without asking.

It is fed as the orders actor's replica is: product.created and product.price_changed, heard on the
edge's event subscription (edge.events), where a late, older price never undoes a newer one. What
the catalog had before this edge subscribed is read from it (``ListProducts``, a page at a time)
once the edge is connected, and again after every gap in the subscription: the book is emptied
first, since prices may have changed meanwhile.

POST /orders prices its lines here with the orders actor's own rule (brokers.pricing). A SKU the book
does not know is asked of inventory and orders as before (the product may be newer than what the
book has heard, or the book still loading), so the book only saves questions, it never refuses on
its own what the actors would take.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter

from brokers.contracts.catalog import ListProducts, ProductCreated, ProductPage, ProductPriceChanged
from brokers.envelope import Envelope, InvalidMessage
from brokers.pricing import Price, newer
from brokers.rpc import BrokerUnavailable, QueryFailed

log = structlog.get_logger()

PAGE = 100  # products per ListProducts page (the query's largest)
RELOAD_PAUSE_S = 1.0  # after a load that failed (the catalog not answering, RabbitMQ away)
PRICE_EVENTS = (ProductCreated, ProductPriceChanged)
# New orders' lines checked by the book, or by asking the actors (a SKU the book had not heard of).
ORDER_CHECKS = Counter(
    "emporium_edge_order_checks_total",
    "New orders whose lines the edge checked, by who priced them (price_book or actors)",
    ["by"],
)
for _by in ("price_book", "actors"):
    ORDER_CHECKS.labels(_by)  # a series at 0 from the start, so a rate over it is 0, not no data

LoadPage = Callable[[ListProducts], Awaitable[ProductPage]]


class PriceBook:
    def __init__(self, load_page: LoadPage, *, reload_pause_s: float = RELOAD_PAUSE_S) -> None:
        self._load_page = load_page
        self._reload_pause_s = reload_pause_s
        self._prices: dict[str, Price] = {}
        # Bumped by every gap: a load that began before one is stale when it ends.
        self._generation = 0
        self._load_due = asyncio.Event()
        self._load_due.set()  # what the catalog has before this edge heard anything
        self._loaded = False
        self._loading: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """The catalog's products were read since the last gap (the book knows every product)."""
        return self._loaded

    def prices_of(self, skus: Iterable[str]) -> dict[str, Price]:
        """The known prices of these SKUs (a SKU the book has not heard of is left out)."""
        return {sku: self._prices[sku] for sku in skus if sku in self._prices}

    def heard(self, message: AbstractIncomingMessage) -> None:
        """A product.created or product.price_changed on the edge's subscription."""
        contract = ProductCreated if message.type == ProductCreated.TYPE else ProductPriceChanged
        try:
            envelope = Envelope.from_amqp(
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                type=message.type,
                headers=dict(message.headers),
            )
            event = contract.parse(message.body)
        except InvalidMessage as exc:
            log.warning("edge.price_event_invalid", type=message.type, error=str(exc))
            return
        self._offer(Price(event.sku, event.price_cents, event.currency, as_of=envelope.occurred_at))

    def gap(self) -> None:
        """Events may have been missed: forget every price and read the catalog again."""
        self._generation += 1
        self._prices.clear()
        self._loaded = False
        self._load_due.set()

    def start(self) -> None:
        self._loading = asyncio.create_task(self._keep_loaded(), name="edge-price-book")

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
            self._loading = None

    def _offer(self, price: Price) -> None:
        if newer(price, self._prices.get(price.sku)):
            self._prices[price.sku] = price

    async def _keep_loaded(self) -> None:
        while True:
            await self._load_due.wait()
            self._load_due.clear()
            generation = self._generation
            try:
                products = await self._every_product()
            except (BrokerUnavailable, QueryFailed, TimeoutError) as exc:
                log.info("edge.price_book_not_loaded", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(self._reload_pause_s)
                self._load_due.set()
                continue
            if generation != self._generation:  # a gap came meanwhile: load again
                continue
            for price in products:
                self._offer(price)
            self._loaded = True
            log.info("edge.price_book_loaded", products=len(self._prices))

    async def _every_product(self) -> list[Price]:
        prices: list[Price] = []
        offset = 0
        while True:
            page = await self._load_page(ListProducts(offset=offset, limit=PAGE))
            prices.extend(
                Price(view.sku, view.price_cents, view.currency, as_of=_as_of(view.updated_at))
                for view in page.items
            )
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return prices


def _as_of(updated_at: datetime) -> datetime:
    """When the catalog last changed the product (so at the latest its price), always in UTC: a
    price event heard since wins over it, an older one loses."""
    return updated_at if updated_at.tzinfo is not None else updated_at.replace(tzinfo=UTC)


def price_book_of_link(link: Any) -> PriceBook:
    """The price book of an edge: loaded over its link, fed by the events it hears, emptied on a gap."""

    async def load_page(query: ListProducts) -> ProductPage:
        return await link.ask(query, ProductPage, correlation_id="edge-price-book")

    book = PriceBook(load_page)
    for contract in PRICE_EVENTS:
        link.saga_events.on_event(contract.TYPE, book.heard)
    link.saga_events.on_gap(book.gap)
    return book
