"""The edge's price book: fed by price events (a late older price never undoes a newer one), loaded
from the catalog a page at a time, emptied and loaded again on a gap; and the orders the edge
remembers as placed, so that retries are answered without asking."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from brokers.contracts.catalog import (
    ListProducts,
    ProductCreated,
    ProductPage,
    ProductPriceChanged,
    ProductView,
)
from brokers.envelope import Envelope
from brokers.rpc import QueryTimeout
from edge.prices import PriceBook
from tests.helpers import eventually

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class Message:
    """What the book reads of a delivered event."""

    type: str
    body: bytes
    headers: dict[str, Any]
    message_id: str = "m-1"
    correlation_id: str = "c-1"


def created(sku: str, cents: int, *, at: datetime = T0, currency: str = "EUR") -> AbstractIncomingMessage:
    event = ProductCreated(
        product_id=f"p-{sku}", sku=sku, name=sku, category="c", price_cents=cents, currency=currency
    )
    return _message(event, at)


def changed(sku: str, cents: int, *, at: datetime) -> AbstractIncomingMessage:
    event = ProductPriceChanged(
        product_id=f"p-{sku}", sku=sku, old_price_cents=1, price_cents=cents, currency="EUR"
    )
    return _message(event, at)


def _message(event: ProductCreated | ProductPriceChanged, at: datetime) -> AbstractIncomingMessage:
    envelope = Envelope(correlation_id="c-1", type=event.TYPE, occurred_at=at)
    headers = envelope.amqp()["headers"]
    return cast(AbstractIncomingMessage, Message(event.TYPE, event.model_dump_json().encode(), headers))


def view(sku: str, cents: int, at: datetime = T0) -> ProductView:
    return ProductView(
        product_id=f"p-{sku}",
        sku=sku,
        name=sku,
        description="",
        category="c",
        price_cents=cents,
        currency="EUR",
        created_at=at,
        updated_at=at,
    )


@dataclass
class Catalog:
    """The catalog's ListProducts answers, counted; ``failing`` answers time out."""

    products: list[ProductView] = field(default_factory=list)
    asked: list[ListProducts] = field(default_factory=list)
    failing: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.hold.set()

    async def page(self, query: ListProducts) -> ProductPage:
        self.asked.append(query)
        await self.hold.wait()
        if self.failing:
            self.failing -= 1
            raise QueryTimeout("no reply")
        items = self.products[query.offset : query.offset + query.limit]
        return ProductPage(items=items, total=len(self.products), offset=query.offset, limit=query.limit)


async def loaded(book: PriceBook) -> None:
    async def probe() -> bool:
        await asyncio.sleep(0)
        return book.loaded

    await eventually(probe, what="the book to be loaded", timeout=5.0)


def cents(book: PriceBook, *skus: str) -> dict[str, int]:
    return {sku: price.cents for sku, price in book.prices_of(skus).items()}


def test_a_newer_price_replaces_an_older_one_and_a_late_older_one_does_not() -> None:
    book = PriceBook(Catalog().page)

    book.heard(created("A", 100))
    book.heard(changed("A", 300, at=T0 + timedelta(seconds=2)))
    book.heard(changed("A", 200, at=T0 + timedelta(seconds=1)))  # late

    assert cents(book, "A", "B") == {"A": 300}


def test_an_invalid_price_event_is_ignored() -> None:
    book = PriceBook(Catalog().page)
    broken = cast(AbstractIncomingMessage, Message(ProductCreated.TYPE, b'{"sku": 5}', {}))

    book.heard(broken)

    assert cents(book, "A") == {}


async def test_the_catalog_is_read_a_page_at_a_time_and_events_heard_meanwhile_stay_newer() -> None:
    catalog = Catalog(products=[view(f"S{i:03}", 100 + i) for i in range(250)])
    book = PriceBook(catalog.page)
    catalog.hold.clear()
    book.start()
    try:
        book.heard(changed("S001", 999, at=T0 + timedelta(seconds=1)))  # newer than the catalog's page
        catalog.hold.set()
        await loaded(book)
    finally:
        await book.stop()

    assert [(q.offset, q.limit) for q in catalog.asked] == [(0, 100), (100, 100), (200, 100)]
    assert cents(book, "S000", "S001", "S249") == {"S000": 100, "S001": 999, "S249": 349}


async def test_a_gap_empties_the_book_and_reads_the_catalog_again() -> None:
    catalog = Catalog(products=[view("A", 100)])
    book = PriceBook(catalog.page)
    book.start()
    try:
        await loaded(book)
        book.heard(created("B", 200))
        catalog.products = [view("A", 150, T0 + timedelta(seconds=5))]

        book.gap()

        assert not book.loaded and cents(book, "A", "B") == {}
        await loaded(book)
    finally:
        await book.stop()
    assert cents(book, "A", "B") == {"A": 150}


async def test_a_load_that_a_gap_interrupts_is_not_kept_and_a_failed_one_is_tried_again() -> None:
    catalog = Catalog(products=[view("A", 100)], failing=1)
    book = PriceBook(catalog.page, reload_pause_s=0.01)
    book.start()
    try:
        await loaded(book)  # after one timeout
        catalog.hold.clear()
        book.gap()
        await eventually(_asked(catalog, 3), what="the third load to start")
        catalog.products = [view("A", 175, T0 + timedelta(seconds=5))]
        book.gap()  # while the third load waits: its answer is stale
        catalog.hold.set()
        await loaded(book)
    finally:
        await book.stop()
    assert len(catalog.asked) == 4
    assert cents(book, "A") == {"A": 175}


def _asked(catalog: Catalog, count: int) -> Any:
    async def probe() -> bool:
        await asyncio.sleep(0)
        return len(catalog.asked) >= count

    return probe
