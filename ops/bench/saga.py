"""`emporium bench saga`."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import cache, partial
from typing import Annotated, Any
from urllib.parse import quote

import aio_pika
import httpx
import typer
from faststream.rabbit import RabbitBroker
from prometheus_client import Histogram
from pymongo import monitoring
from rich.progress import Progress

from actors.registry import ACTORS
from actors.runtime import metrics
from actors.runtime.actor import Actor
from actors.runtime.host import ActorHost
from brokers.contracts.catalog import ProductCreated
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import (
    GetOrder,
    OrderView,
    PlaceOrder,
)
from brokers.envelope import Envelope, Message
from brokers.factory import named_url, publish
from brokers.logs import configure_logging
from brokers.management import management_client, vhost_of
from brokers.rpc import requesting
from brokers.settings import Settings, get_settings
from brokers.topology import EVENTS, UNROUTED_EVENTS
from ops.bench.common import (
    BENCH_APP,
    BenchmarkError,
    T,
    app,
    console,
    errors,
    publisher,
    running,
    scratch_database,
    scratch_vhost,
    send_paced,
)
from ops.bench.saga_figures import (
    DEFAULT_EXCHANGE,
    ENDED,
    PRICE_CENTS,
    STATS_INTERVAL_S,
    Batching,
    Counts,
    Cpu,
    Quiet,
    SagaFigures,
    batching_table,
    breakdowns,
    cost_table,
    saga_notes,
    saga_orders,
    saga_table,
    stock_needed,
)
from ops.payment_provider import served

# --- counting ------------------------------------------------------------------------------------


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process's clients start (a round trip each), by database and name."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        # Documents written: (database, collection, command) -> statements of inserts, updates, deletes.
        self.documents: Counter[tuple[str, str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        self.counts[event.database_name, name] += 1
        if statements := _STATEMENTS.get(name):
            written = event.command.get(statements)
            if written is not None:
                self.documents[event.database_name, str(event.command[name]), name] += len(written)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Counted when started."""


_STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}


def cpu_now() -> Cpu:
    """CPU seconds used so far by this process and by the whole machine (Linux's /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
        machine: float | None = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf(
            "SC_CLK_TCK"
        )  # less idle, iowait
    except (OSError, ValueError, IndexError):
        machine = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Cpu(time.process_time(), machine, cores)


@cache
def mongo_command_counter() -> CommandCounter:
    """The process's command counter, registered once; it sees the clients created after the first call."""
    counter = CommandCounter()
    monitoring.register(counter)
    return counter


def taken_by_actors() -> dict[tuple[str, str, str], int]:
    """What this process's actors took off their work queues: (actor, type, outcome) -> messages."""
    return {
        (sample.labels["actor"], sample.labels["type"], sample.labels["outcome"]): int(sample.value)
        for metric in metrics.MESSAGES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def _count_and_sum_by_actor(histogram: Histogram) -> dict[str, tuple[float, float]]:
    """A runtime histogram's count and sum for each actor, its other labels added up."""
    found: dict[str, tuple[float, float]] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            part = sample.name.removeprefix(metric.name)
            if part in ("_count", "_sum"):
                count, total = found.get(sample.labels["actor"], (0.0, 0.0))
                found[sample.labels["actor"]] = (
                    (count + sample.value, total) if part == "_count" else (count, total + sample.value)
                )
    return found


def batching_by_actors() -> dict[str, Batching]:
    """The group commit of this process's actors so far, from the runtime's histograms."""
    sizes = _count_and_sum_by_actor(metrics.BATCH_MESSAGES)
    transactions = _count_and_sum_by_actor(metrics.TRANSACTION_SECONDS)
    handled = _count_and_sum_by_actor(metrics.HANDLER_SECONDS)
    return {
        actor: Batching(
            int(transactions.get(actor, (0, 0))[0]),
            sizes.get(actor, (0, 0))[1],
            transactions.get(actor, (0, 0))[1],
            int(handled.get(actor, (0, 0))[0]),
            handled.get(actor, (0, 0))[1],
        )
        for actor in sizes.keys() | transactions.keys() | handled.keys()
    }


async def _management_get(management: httpx.AsyncClient, path: str) -> Any:
    response = await management.get(path)
    response.raise_for_status()
    return response.json()


async def _read_counts(management: httpx.AsyncClient, settings: Settings, commands: CommandCounter) -> Counts:
    vhost = quote(vhost_of(settings.rabbitmq_url), safe="")
    totals = (await _management_get(management, f"/api/vhosts/{vhost}")).get("message_stats", {})
    parking = await _management_get(management, f"/api/queues/{vhost}/{quote(UNROUTED_EVENTS.name, safe='')}")
    published_to = {
        exchange["name"] or DEFAULT_EXCHANGE: exchange.get("message_stats", {}).get("publish_in", 0)
        for exchange in await _management_get(management, f"/api/exchanges/{vhost}")
    }
    actor_of = {settings.database_name(actor): actor for actor in ACTORS}
    mongo_commands = {
        (actor_of.get(database, database), name): count for (database, name), count in commands.counts.items()
    }
    mongo_documents = {
        (actor_of.get(database, database), collection, name): count
        for (database, collection, name), count in commands.documents.items()
    }
    return Counts(
        totals.get("publish", 0),
        totals.get("deliver_get", 0),
        parking.get("message_stats", {}).get("publish", 0),
        published_to,
        taken_by_actors(),
        mongo_commands,
        batching_by_actors(),
        mongo_documents,
        cpu_now(),
    )


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout_s: float,
    every_s: float,
) -> T:
    deadline = time.monotonic() + timeout_s
    while not done(result := await probe()):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"gave up after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(every_s)
    return result


async def _settled(read: Callable[[], Awaitable[Counts]], progress: Progress, what: str) -> Counts:
    """The counts once they stayed the same for longer than RabbitMQ takes to refresh its own: the
    saga's stragglers (notifications, analytics) are done, and the management API has seen it all."""
    task = progress.add_task(f"{what}: waiting for every count to stop changing", total=None)
    quiet = Quiet(STATS_INTERVAL_S + 1.0)
    try:
        return await poll(
            read,
            lambda counts: quiet.still(counts, time.monotonic()),
            what=f"{what} to go quiet",
            timeout_s=120,
            every_s=0.5,
        )
    finally:
        progress.remove_task(task)


# --- driving the saga ----------------------------------------------------------------------------


class EndWatch:
    """Which orders have ended (order.delivered or order.cancelled seen), each freeing its slot in flight."""

    def __init__(self, concurrency: int) -> None:
        self.in_flight = asyncio.Semaphore(concurrency)
        self.begin([], tick=lambda: None)

    def begin(self, order_ids: Iterable[str], tick: Callable[[], None]) -> None:
        self.waiting = set(order_ids)
        self.ends: dict[str, str] = {}  # order id -> the type of the event that ended it
        self.deliveries = 0  # every event the watch received, copies included
        self.last_end_at = 0.0
        self.all_ended = asyncio.Event()
        self._tick = tick
        if not self.waiting:
            self.all_ended.set()

    def saw(self, event_type: str, order_id: str) -> None:
        self.deliveries += 1
        if event_type not in ENDED or order_id not in self.waiting:
            return  # a copy of an end seen before (delivery is at least once), or not an order of this round
        self.waiting.remove(order_id)
        self.ends[order_id] = event_type
        self.last_end_at = time.perf_counter()
        self.in_flight.release()
        self._tick()
        if not self.waiting:
            self.all_ended.set()


@asynccontextmanager
async def _watching_ends(url: str, watch: EndWatch) -> AsyncIterator[None]:
    """A queue of the bench's own gets a copy of every order.delivered and order.cancelled."""
    async with await aio_pika.connect(named_url(url, BENCH_APP, "end watch")) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for event_type in sorted(ENDED):
            await queue.bind(EVENTS.name, routing_key=event_type)

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            watch.saw(message.type or "", json.loads(message.body)["order_id"])

        await queue.consume(on_event, no_ack=True)
        yield


async def _place_orders(
    broker: RabbitBroker,
    orders: Sequence[PlaceOrder],
    watch: EndWatch,
    concurrency: int,
    tick: Callable[[], None],
) -> float:
    """Place the orders, at most ``concurrency`` of them not yet ended; seconds until the last one ended."""
    watch.begin((order.order_id for order in orders), tick=tick)

    async def place(order: PlaceOrder) -> None:
        # As the edge does: the order id is the saga's correlation id.
        await publish(broker, order, Envelope.first(order, order.order_id))

    # Slower than an order a second means something is broken, not slow.
    timeout_s = 60 + len(orders)
    started = time.perf_counter()
    try:
        await send_paced(
            orders,
            place,
            in_flight=watch.in_flight,
            concurrency=concurrency,
            until=watch.all_ended,
            timeout_s=timeout_s,
        )
    except TimeoutError as exc:
        problem = f"only {len(watch.ends)} of {len(orders)} orders ended in {timeout_s:.0f}s"
        raise BenchmarkError(problem) from exc
    return watch.last_end_at - started


async def publish_and_see_applied(
    broker: RabbitBroker, actors: Sequence[Actor[Any]], messages: Sequence[Message]
) -> None:
    """Publish messages and wait until every actor that handles them has applied each one."""
    expected = Counter(
        (actor.name, message.TYPE)
        for message in messages
        for actor in actors
        if message.TYPE in actor.handlers
    )

    def applied() -> Counter[tuple[str, str]]:
        return Counter(
            {
                (actor, type_): count
                for (actor, type_, outcome), count in taken_by_actors().items()
                if outcome == "applied"
            }
        )

    before = applied()
    for message in messages:
        await publish(broker, message, Envelope.first(message))

    async def grown() -> Counter[tuple[str, str]]:
        return applied() - before

    await poll(
        grown,
        lambda seen: all(seen[key] >= count for key, count in expected.items()),
        what=f"{len(messages)} {messages[0].TYPE} to be applied",
        timeout_s=30,
        every_s=0.05,
    )


async def _stock_the_shop(
    broker: RabbitBroker, actors: Sequence[Actor[Any]], orders: Iterable[PlaceOrder]
) -> None:
    """Announce the products (as catalog would) to inventory and orders, then restock them."""
    needed = stock_needed(orders)
    products = [
        ProductCreated(
            product_id=f"product-{sku.lower()}",
            sku=sku,
            name=f"bench item {sku}",
            category="bench",
            price_cents=PRICE_CENTS,
            currency="EUR",
        )
        for sku in needed
    ]
    await publish_and_see_applied(broker, actors, products)
    # Only a SKU inventory knows can be restocked.
    restocks = [Restock(sku=sku, quantity=units) for sku, units in needed.items()]
    await publish_and_see_applied(broker, actors, restocks)


async def _order_views(settings: Settings, order_ids: Iterable[str]) -> list[OrderView]:
    async with requesting(settings, app_name=BENCH_APP) as requester:
        asked = (requester.ask(GetOrder(order_id=order_id), OrderView) for order_id in order_ids)
        return list(await asyncio.gather(*asked))


def _ticker(progress: Progress, description: str, total: int) -> Callable[[], None]:
    """A new progress bar, and what moves it on by one."""
    return partial(progress.advance, progress.add_task(description, total=total))


def _saga_settings(scratch: Settings, provider_url: str, carrier_step_ms: int) -> Settings:
    return scratch.model_copy(
        update={
            "emporium_payment_provider_url": provider_url,
            "emporium_carrier_step_ms": carrier_step_ms,
            # No order may run out of time during a run: that would be a cancellation, not a figure.
            "emporium_order_deadline_ms": 3_600_000,
            # The sweeper reads every few seconds whatever the load: time-based, not per-order, work.
            # Nothing is left for it to do in a healthy run (the outbox is published right after commit).
            "emporium_outbox_sweep_s": 3_600.0,
        }
    )


async def run_saga(
    settings: Settings,
    *,
    orders: int,
    warmup: int,
    concurrency: int,
    carrier_step_ms: int,
    progress: Progress,
) -> SagaFigures:
    """Every actor and the payment-provider simulator on a scratch vhost and databases: warm-up orders,
    then ``orders`` orders followed to their end, and what they cost."""
    commands = mongo_command_counter()  # before the host creates its MongoDB client
    actors = list(ACTORS.values())
    placing = saga_orders(warmup + orders)
    warming, measured = placing[:warmup], placing[warmup:]
    watch = EndWatch(concurrency)
    async with (
        scratch_vhost(settings) as on_vhost,
        scratch_database(on_vhost, ACTORS) as scratch,
        served() as provider,
        management_client(settings) as management,
    ):
        run_settings = _saga_settings(scratch, provider.url, carrier_step_ms)
        read_counts = partial(_read_counts, management, run_settings, commands)
        async with (
            running(ActorHost(actors, run_settings, app_name="emporium-bench-saga")),
            publisher(run_settings) as broker,
            _watching_ends(run_settings.rabbitmq_url, watch),
        ):
            await _stock_the_shop(broker, actors, placing)
            # Warm-up: connections, the provider's HTTP client, the first transactions, Python's caches.
            warm_up_ended = _ticker(progress, "warm-up orders ended", warmup)
            await _place_orders(broker, warming, watch, concurrency, warm_up_ended)
            before = await _settled(read_counts, progress, "before the run")
            ended = _ticker(progress, "orders ended", orders)
            seconds = await _place_orders(broker, measured, watch, concurrency, ended)
            after = await _settled(read_counts, progress, "after the run")
            views = await _order_views(run_settings, (order.order_id for order in measured))
    cost = after.since(before)
    # The watch's own copies of the orders' ends are not the saga's work.
    figures = SagaFigures.of(views, seconds, replace(cost, delivered=cost.delivered - watch.deliveries))
    if not figures.delivered:
        problem = f"none of the {figures.placed} orders was delivered ({figures.cancelled} cancelled)"
        raise BenchmarkError(problem)
    return figures


@app.command("saga")
def saga_command(
    orders: Annotated[int, typer.Option(min=1, max=10_000, help="Orders measured.")] = 50,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Orders in flight at once: the next is placed when one ends.")
    ] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Orders placed and ended before measuring.")] = 5,
    carrier_step_ms: Annotated[
        int, typer.Option(min=100, help="How long the simulated carrier takes per shipment step.")
    ] = 100,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON (progress and errors on stderr).")
    ] = False,
) -> None:
    """Whole orders through every actor: messages and MongoDB round trips per order, and saga latencies."""
    settings = get_settings()
    # Retries are warnings, and counted in the figures: in the log they would only garble the progress bars.
    configure_logging("ERROR")
    with Progress(console=errors, disable=json_output) as progress:
        try:
            figures = asyncio.run(
                run_saga(
                    settings,
                    orders=orders,
                    warmup=warmup,
                    concurrency=concurrency,
                    carrier_step_ms=carrier_step_ms,
                    progress=progress,
                )
            )
        except BenchmarkError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    if json_output:
        run = {"concurrency": concurrency, "carrier_step_ms": carrier_step_ms}
        typer.echo(json.dumps({"run": run, **figures.as_dict()}, indent=2))
        return
    console.print(saga_table(figures, concurrency=concurrency, carrier_step_ms=carrier_step_ms))
    console.print(cost_table(figures))
    console.print(batching_table(figures))
    for table in breakdowns(figures):
        console.print(table)
    console.print(saga_notes(figures))
