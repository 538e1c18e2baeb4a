"""`emporium bench hot-sku`: a burst of reservations for one SKU, drained by one inventory process
with one message in flight, then many, then by two processes (replicas) at once, with how many of
their transactions aborted (a write conflict on the SKU's stock, run again).

One replica and two are run in turns, ``--repeats`` times each, and compared by their medians: a
single run of each, always in the same order, mostly measures what the server went through before
(its storage grows with every run).

Inventory is partitioned by SKU: the hot SKU's reservations all wait in one partition, which one
replica at a time takes, so two replicas should drain it as fast as one, without conflicts."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from contextlib import AsyncExitStack
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
from brokers.topology import work_queue_names
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
from ops.bench.saga import mongo_command_counter, poll, publish_and_see_applied, taken_by_actors
from ops.bench.saga_figures import PRICE_CENTS

HOT_SKU = "BENCH-HOT"


@dataclass(frozen=True)
class DrainFigures:
    prefetch: int
    orders: int
    seconds: float
    reserved: int
    retried: int
    replicas: int = 1
    commits: int = 0  # transactions committed, and aborted (each run again or retried later)
    aborts: int = 0

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds if self.seconds else math.inf

    @property
    def aborted_share(self) -> float:
        attempts = self.commits + self.aborts
        return self.aborts / attempts if attempts else 0.0


def _transaction_ends() -> Counter[str]:
    """The transactions this process's MongoDB clients ended so far, by how (commit or abort)."""
    counts = mongo_command_counter().counts
    return Counter({name: counts["admin", name] for name in ("commitTransaction", "abortTransaction")})


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
    settings: Settings, *, orders: int, units: int, prefetch: int, progress: Progress, replicas: int = 1
) -> DrainFigures:
    """A burst of ``orders`` reservations of one SKU holding ``units``, drained by ``replicas``
    inventory processes (hosts of their own, here in one process) each taking ``prefetch`` messages
    at once: how fast they got through them, and how many transactions aborted."""
    inventory = ACTORS["inventory"]
    mongo_command_counter()  # registered before the hosts' clients are made
    async with scratch_vhost(settings) as on_vhost, scratch_database(on_vhost, [inventory.name]) as scratch:
        run_settings = scratch.model_copy(update={"emporium_prefetch": prefetch})
        async with AsyncExitStack() as hosts, publisher(run_settings) as broker:
            started_hosts = []
            for n in range(replicas):
                host = ActorHost([inventory], run_settings, app_name=f"emporium-bench-hot-sku-{n + 1}")
                started_hosts.append(await hosts.enter_async_context(running(host)))
            await _shared_out(started_hosts[0], replicas)
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
            before, ends_before = _inventory_outcomes(), _transaction_ends()
            task = progress.add_task(f"{replicas} x prefetch {prefetch}: reservations applied", total=orders)
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
            ends = _transaction_ends() - ends_before
            client: AsyncMongoClient = AsyncMongoClient(run_settings.mongodb_url)
            try:
                stock = await client[run_settings.database_name(inventory.name)]["stock"].find_one(
                    {"_id": HOT_SKU}
                )
            finally:
                await client.close()
    reserved = stock["reserved"] if stock else 0
    return DrainFigures(
        prefetch,
        orders,
        seconds,
        reserved,
        seen["retried"],
        replicas,
        ends["commitTransaction"],
        ends["abortTransaction"],
    )


async def _shared_out(first: ActorHost, replicas: int) -> None:
    """Once the first replica holds no more than its share of inventory's partitions: the burst
    meets the replicas as they run for good, not in the seconds they take to share the work out."""
    [partitions] = first.partitions
    share = math.ceil(len(work_queue_names("inventory")) / replicas)

    async def held() -> int:
        return len(partitions.held)

    await poll(
        held, lambda count: count <= share, what="the partitions shared out", timeout_s=30, every_s=0.1
    )


def hot_sku_table(runs: list[DrainFigures], ceiling: float, units: int) -> Table:
    """One row per setup (replicas, messages in flight), the median of its runs with their range;
    ratios against the first setup's median and, for two replicas, against one with as many in
    flight."""
    table = Table(title=f"a burst of reservations for one SKU ({units} units on hand)")
    columns = (
        "inventory processes",
        "messages in flight, each",
        "runs",
        "orders",
        "drained/s (median)",
        "range",
        "vs the first",
        "vs one process",
        "reserved",
        "retried",
        "transactions aborted",
    )
    for column in columns:
        table.add_column(column, justify="right")
    setups: dict[tuple[int, int], list[DrainFigures]] = {}
    for figures in runs:
        setups.setdefault((figures.replicas, figures.prefetch), []).append(figures)
    medians = {setup: statistics.median(f.per_second for f in taken) for setup, taken in setups.items()}
    first = medians[runs[0].replicas, runs[0].prefetch]
    for (replicas, prefetch), taken in setups.items():
        median = medians[replicas, prefetch]
        alone = medians.get((1, prefetch))
        commits, aborts = sum(f.commits for f in taken), sum(f.aborts for f in taken)
        table.add_row(
            str(replicas),
            str(prefetch),
            str(len(taken)),
            str(taken[0].orders),
            f"{median:.1f}",
            f"{min(f.per_second for f in taken):.0f}-{max(f.per_second for f in taken):.0f}",
            f"{median / first:.2f}x",
            f"{median / alone:.2f}x" if alone and replicas > 1 else "-",
            "/".join(sorted({str(f.reserved) for f in taken})),
            str(sum(f.retried for f in taken)),
            f"{aborts} of {commits + aborts} ({aborts / (commits + aborts) if commits + aborts else 0:.1%})",
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
    repeats: Annotated[
        int, typer.Option(min=1, max=20, help="Runs of one replica and of two, taken in turns.")
    ] = 3,
) -> None:
    """A burst of orders for one SKU drained by inventory with one message in flight, then many,
    then by two inventory replicas at once."""
    settings = get_settings()
    configure_logging("ERROR")
    many = prefetch or settings.emporium_prefetch

    async def run(progress: Progress) -> tuple[list[DrainFigures], float]:
        setups = [(1, 1)] + [(many, replicas) for _ in range(repeats) for replicas in (1, 2)]
        runs = [
            await drain_hot_sku(
                settings, orders=orders, units=units, prefetch=each, progress=progress, replicas=replicas
            )
            for each, replicas in setups
        ]
        return runs, (await database_ceiling(settings, batch=1)).single_per_s

    with Progress(console=console) as progress:
        try:
            runs, ceiling = asyncio.run(run(progress))
        except BenchmarkError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(hot_sku_table(runs, ceiling, units))
