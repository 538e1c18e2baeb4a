"""`emporium bench hot-sku`."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated

import typer
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from rich.progress import Progress
from rich.table import Table

from actors.registry import ACTORS
from actors.runtime.host import ActorHost
from brokers.contracts.catalog import ProductCreated
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import (
    OrderLine,
    OrderPlaced,
)
from brokers.envelope import Envelope
from brokers.factory import publish
from brokers.logs import configure_logging
from brokers.settings import Settings, get_settings
from ops.bench.common import (
    BenchmarkError,
    app,
    console,
    database_ceiling,
    errors,
    publisher,
    running,
    scratch_database,
    scratch_vhost,
)
from ops.bench.saga import poll, publish_and_see_applied, taken_by_actors
from ops.bench.saga_figures import PRICE_CENTS

HOT_SKU = "BENCH-HOT"


@dataclass(frozen=True)
class DrainFigures:
    prefetch: int
    orders: int
    seconds: float
    reserved: int
    retried: int

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds if self.seconds else math.inf


def _hot_orders(count: int) -> list[OrderPlaced]:
    return [
        OrderPlaced(
            order_id=f"hot-{n}",
            customer_id="bench-customer",
            currency="EUR",
            total_cents=PRICE_CENTS,
            lines=[OrderLine(sku=HOT_SKU, quantity=1, unit_price_cents=PRICE_CENTS)],
        )
        for n in range(count)
    ]


def _inventory_outcomes() -> Counter[str]:
    return Counter(
        {
            outcome: count
            for (actor, type_, outcome), count in taken_by_actors().items()
            if actor == "inventory" and type_ == OrderPlaced.TYPE
        }
    )


async def drain_hot_sku(
    settings: Settings, *, orders: int, units: int, prefetch: int, progress: Progress
) -> DrainFigures:
    """A burst of ``orders`` reservations of one SKU holding ``units``, drained by one inventory
    process taking ``prefetch`` messages at once: how fast it got through them."""
    inventory = ACTORS["inventory"]
    async with scratch_vhost(settings) as on_vhost, scratch_database(on_vhost, [inventory.name]) as scratch:
        run_settings = scratch.model_copy(update={"emporium_prefetch": prefetch})
        async with (
            running(ActorHost([inventory], run_settings, app_name="emporium-bench-hot-sku")),
            publisher(run_settings) as broker,
        ):
            product = ProductCreated(
                product_id="product-hot",
                sku=HOT_SKU,
                name="the hot one",
                category="bench",
                price_cents=PRICE_CENTS,
                currency="EUR",
            )
            await publish_and_see_applied(broker, [inventory], [product])
            await publish_and_see_applied(broker, [inventory], [Restock(sku=HOT_SKU, quantity=units)])
            before = _inventory_outcomes()
            task = progress.add_task(f"prefetch {prefetch}: reservations applied", total=orders)
            started = time.perf_counter()
            await asyncio.gather(
                *(publish(broker, o, Envelope.first(o, o.order_id)) for o in _hot_orders(orders))
            )

            async def applied() -> Counter[str]:
                seen = _inventory_outcomes() - before
                progress.update(task, completed=seen["applied"])
                return seen

            seen = await poll(
                applied,
                lambda seen: seen["applied"] >= orders,
                what=f"{orders} reservations",
                timeout_s=600,
                every_s=0.05,
            )
            seconds = time.perf_counter() - started
            client: AsyncMongoClient = AsyncMongoClient(run_settings.mongodb_url)
            try:
                stock = await client[run_settings.database_name(inventory.name)]["stock"].find_one(
                    {"_id": HOT_SKU}
                )
            finally:
                await client.close()
    return DrainFigures(prefetch, orders, seconds, stock["reserved"] if stock else 0, seen["retried"])


def hot_sku_table(single: DrainFigures, many: DrainFigures, ceiling: float, units: int) -> Table:
    table = Table(title=f"a burst of reservations for one SKU ({units} units on hand)")
    for column in ("messages in flight", "orders", "drained/s", "vs 1 in flight", "reserved", "retried"):
        table.add_column(column, justify="right")
    for figures in (single, many):
        ratio = figures.per_second / single.per_second
        table.add_row(
            str(figures.prefetch),
            str(figures.orders),
            f"{figures.per_second:.1f}",
            f"{ratio:.2f}x",
            str(figures.reserved),
            str(figures.retried),
        )
    table.caption = f"the database's own ceiling: {ceiling:.0f} small transactions/s one at a time"
    return table


@app.command("hot-sku")
def hot_sku_command(
    orders: Annotated[int, typer.Option(min=10, max=20_000, help="Reservations in the burst.")] = 1000,
    units: Annotated[
        int, typer.Option(min=1, help="Units of the SKU on hand (the rest are rejected).")
    ] = 300,
    prefetch: Annotated[
        int | None,
        typer.Option(min=2, help="Messages in flight for the second run; default: EMPORIUM_PREFETCH."),
    ] = None,
) -> None:
    """A burst of orders for one SKU drained by inventory with one message in flight, then many."""
    settings = get_settings()
    configure_logging("ERROR")
    many = prefetch or settings.emporium_prefetch

    async def run(progress: Progress) -> tuple[DrainFigures, DrainFigures, float]:
        single = await drain_hot_sku(settings, orders=orders, units=units, prefetch=1, progress=progress)
        concurrent = await drain_hot_sku(
            settings, orders=orders, units=units, prefetch=many, progress=progress
        )
        return single, concurrent, (await database_ceiling(settings, batch=1)).single_per_s

    with Progress(console=console) as progress:
        try:
            single, concurrent, ceiling = asyncio.run(run(progress))
        except BenchmarkError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(hot_sku_table(single, concurrent, ceiling, units))
