"""`emporium bench`: what the actor runtime costs, one hop at a time (`hop`) and whole orders (`saga`).

`emporium bench hop`: what one hop through the actor runtime costs next to plain aio-pika. Three hops
do the same broker work (persistent messages, publisher confirms, ``mandatory``, a quorum queue with
the arguments of an actor's work queue, the same prefetch, one ack per message):

1. raw aio-pika: a channel publishes, a consumer callback acks;
2. FastStream: the broker factory and subscription style the runtime uses, a handler that only acks;
3. actor runtime: an ActorHost running a do-nothing actor, so each message also goes through envelope
   validation and the MongoDB transaction (inbox insert) before its ack.

(2) against (1) is the price of FastStream; (3) against (2) is what the runtime adds, most of it the
database. The runtime also times each transaction itself (emporium_handler_duration_seconds), which
gives the database's share directly.

A fixed number of messages is kept in flight (published, not yet consumed), so latencies measure a
hop, not a backlog. Latency runs from just before the publish call to just after the consumer's ack
(for the runtime hop: after commit and ack), on one process clock.

`emporium bench saga`: every actor and the payment-provider simulator in this process; orders are
placed (as the edge would) and followed to their end, a fixed number in flight. It reports what a
delivered order costs: the messages RabbitMQ took in and handed out, the MongoDB commands (round trips)
the actors made, and how long orders took from placed to confirmed and to delivered.

Each run has a vhost and databases of its own, created for it and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache, partial
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import httpx
import typer
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from prometheus_client import REGISTRY
from pymongo import UpdateOne, monitoring
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from actors.registry import ACTORS
from actors.runtime import metrics
from actors.runtime.actor import Actor, Work
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.store import Store
from brokers.contracts.catalog import ProductCreated
from brokers.contracts.common import Line
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import (
    GetOrder,
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    OrderStatus,
    OrderView,
    PlaceOrder,
)
from brokers.envelope import Command, Envelope, Message, new_id
from brokers.factory import make_broker, publish, publish_body
from brokers.logs import configure_logging
from brokers.rpc import requesting
from brokers.settings import Settings, get_settings
from brokers.topology import COMMANDS, EVENTS, UNROUTED_EVENTS, QueueSpec, declare_exchanges
from ops.dlq import management_client, vhost_of, with_vhost
from ops.payment_provider import served

app = typer.Typer(help="Measure the cost of the actor runtime.", no_args_is_help=True)
console = Console()


class BenchmarkError(RuntimeError):
    """A hop stalled: its messages stopped coming through."""


class BenchPing(Command):
    """The benchmark's message. Kept out of the contract registry: it exists only inside a run."""

    TYPE: ClassVar[str] = "bench.ping"
    seq: int
    sent_at: float  # time.perf_counter() of the publishing process, which is also the consuming one


bench_actor: Actor[Store] = Actor("bench", Store)


@bench_actor.handles(BenchPing)
async def _do_nothing(ping: BenchPing, work: Work[Store]) -> None:
    """The runtime's work around this handler (inbox, transaction, ack) is what is measured."""


# --- figures (pure) -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie, interpolating between neighbours."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class HopFigures:
    name: str
    messages: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    # Mean time of the MongoDB transaction per message, for the hop that runs one.
    transaction_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @classmethod
    def of(
        cls, name: str, latencies_s: Sequence[float], seconds: float, transaction_ms: float | None = None
    ) -> HopFigures:
        return cls(
            name,
            len(latencies_s),
            seconds,
            percentile(latencies_s, 0.50) * 1000,
            percentile(latencies_s, 0.99) * 1000,
            sum(latencies_s) / len(latencies_s) * 1000,
            transaction_ms,
        )


@dataclass(frozen=True)
class DatabaseCeiling:
    """What the database alone allows, measured in the same run: the work of one message (an inbox
    insert, a state update, an outbox insert) one transaction after another, one message per
    transaction and then ``batch`` per transaction (insert_many, one bulk_write)."""

    single_per_s: float
    batched_per_s: float
    batch: int


async def database_ceiling(settings: Settings, *, batch: int, seconds: float = 2.0) -> DatabaseCeiling:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    db = client[f"bench{uuid.uuid4().hex[:8]}_ceiling"]
    states = [f"state-{n}" for n in range(batch)]

    async def messages_per_second(size: int) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            async with client.start_session() as session, await session.start_transaction():
                await db["inbox"].insert_many([{"_id": new_id()} for _ in range(size)], session=session)
                updates = [UpdateOne({"_id": state}, {"$inc": {"n": 1}}, upsert=True) for state in states[:size]]
                await db["state"].bulk_write(updates, session=session)
                await db["outbox"].insert_many([{"_id": new_id(), "body": b"{}"} for _ in range(size)], session=session)
            done += size
        return done / (time.perf_counter() - started)

    try:
        await db["inbox"].insert_one({"_id": "first"})  # collections exist before any transaction
        await db["outbox"].insert_one({"_id": "first"})
        await db["state"].insert_one({"_id": "first"})
        return DatabaseCeiling(await messages_per_second(1), await messages_per_second(batch), batch)
    finally:
        await client.drop_database(db.name)
        await client.close()


def figures_table(
    hops: Sequence[HopFigures], ceiling: DatabaseCeiling, *, concurrency: int, prefetch: int
) -> Table:
    """The hops side by side, then the database's own ceilings; ratios are against the first hop
    (the raw baseline)."""
    baseline = hops[0]
    table = Table(title=f"{baseline.messages} messages per hop, {concurrency} in flight, prefetch {prefetch}")
    table.add_column("hop", no_wrap=True)
    for column in ("msg/s", "p50 ms", "p99 ms", "tx ms", "msg/s ÷ raw", "p50 ÷ raw"):
        table.add_column(column, justify="right")
    for hop in hops:
        table.add_row(
            hop.name,
            f"{hop.per_second:,.0f}",
            f"{hop.p50_ms:.2f}",
            f"{hop.p99_ms:.2f}",
            "-" if hop.transaction_ms is None else f"{hop.transaction_ms:.2f}",
            f"{hop.per_second / baseline.per_second:.2f}x",
            f"{hop.p50_ms / baseline.p50_ms:.2f}x",
        )
    for name, per_second in (
        ("MongoDB alone, 1 per transaction", ceiling.single_per_s),
        (f"MongoDB alone, {ceiling.batch} per transaction", ceiling.batched_per_s),
    ):
        table.add_row(name, f"{per_second:,.0f}", "-", "-", "-", f"{per_second / baseline.per_second:.2f}x", "-")
    return table


def summary(
    raw: HopFigures, faststream: HopFigures, single: HopFigures, grouped: HopFigures, ceiling: DatabaseCeiling
) -> str:
    def ratio(hop: HopFigures, per_second: float) -> str:
        return f"{hop.per_second / per_second:.2f}x"

    return (
        f"throughput vs raw aio-pika: FastStream {ratio(faststream, raw.per_second)}, actor runtime "
        f"{ratio(single, raw.per_second)} with 1 message per transaction, {ratio(grouped, raw.per_second)} "
        "with group commit\n"
        f"vs the database alone (same run): 1 per transaction reaches {ratio(single, ceiling.single_per_s)} "
        f"of {ceiling.single_per_s:,.0f} transactions/s; group commit reaches "
        f"{ratio(grouped, ceiling.batched_per_s)} of {ceiling.batched_per_s:,.0f} messages/s in transactions "
        f"of {ceiling.batch}\n"
        f"group commit vs 1 per transaction: {ratio(grouped, single.per_second)} the throughput, p50 "
        f"{grouped.p50_ms / single.p50_ms:.2f}x\n"
        "latency: from just before the publish call to just after the consumer's ack "
        "(runtime hops: after the commit, the outbox's confirms and the ack); tx ms: transaction time "
        "per message applied"
    )


# --- driving a hop --------------------------------------------------------------------------------

Publish = Callable[[BenchPing], Awaitable[None]]
T = TypeVar("T")
K = TypeVar("K")


class Meter:
    """Where consumers report each message they finished; one round at a time."""

    def __init__(self, concurrency: int, tick: Callable[[], None]) -> None:
        # Released by the consumer: bounds the messages published and not yet consumed.
        self.in_flight = asyncio.Semaphore(concurrency)
        self._tick = tick
        self.begin(0)

    def begin(self, expected: int) -> None:
        self.expected = expected
        self.latencies: list[float] = []
        self.finished_at = 0.0
        self.done = asyncio.Event()
        if expected == 0:
            self.done.set()

    def consumed(self, body: bytes) -> None:
        now = time.perf_counter()
        self.latencies.append(now - json.loads(body)["sent_at"])
        self.in_flight.release()
        self._tick()
        if len(self.latencies) == self.expected:
            self.finished_at = now
            self.done.set()


async def send_paced(
    items: Iterable[T],
    send: Callable[[T], Awaitable[None]],
    *,
    in_flight: asyncio.Semaphore,
    concurrency: int,
    until: asyncio.Event,
    timeout_s: float,
) -> None:
    """Send every item, then wait for ``until``; TimeoutError if that takes over ``timeout_s``.

    ``concurrency`` senders share the items; each takes a slot of ``in_flight`` before sending, and
    whoever sees an item through gives the slot back, so the work in flight stays bounded.
    """
    pending = iter(items)

    async def sender() -> None:
        for item in pending:
            await in_flight.acquire()
            await send(item)

    await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(concurrency)), until.wait()), timeout_s)


async def run_round(
    publish_one: Publish, meter: Meter, messages: int, concurrency: int
) -> tuple[list[float], float]:
    """Send ``messages`` through a hop; returns their latencies and the seconds the round took."""
    meter.begin(messages)

    async def send(seq: int) -> None:
        # Timed from here, once a slot is free: the latency of a hop, not of the wait for a slot.
        await publish_one(BenchPing(seq=seq, sent_at=time.perf_counter()))

    started = time.perf_counter()
    # Slower than 50 msg/s means something is broken, not slow.
    timeout_s = 30 + messages / 50
    try:
        await send_paced(
            range(messages), send, in_flight=meter.in_flight, concurrency=concurrency, until=meter.done,
            timeout_s=timeout_s,
        )
    except TimeoutError as exc:
        raise BenchmarkError(
            f"only {len(meter.latencies)} of {messages} messages came through in {timeout_s:.0f}s"
        ) from exc
    return meter.latencies, meter.finished_at - started


# --- the three hops -------------------------------------------------------------------------------

Hop = Callable[[Settings, Meter], AbstractAsyncContextManager[Publish]]


def _baseline_queue(settings: Settings, name: str) -> QueueSpec:
    """A queue like the bench actor's work queue (same arguments), bound to a routing key of its own."""
    work = topology_of(bench_actor, settings).work
    return QueueSpec(name, work.arguments, ((COMMANDS.name, name),))


RAW = "bench-raw"
FASTSTREAM = "bench-faststream"


async def _declare_baseline_queues(settings: Settings) -> None:
    broker = make_broker(settings, app_name="emporium-bench")
    await broker.connect()
    try:
        await declare_exchanges(broker)
        for spec in (_baseline_queue(settings, RAW), _baseline_queue(settings, FASTSTREAM)):
            queue = await broker.declare_queue(spec.rabbit_queue())
            for exchange, routing_key in spec.bindings:
                await queue.bind(exchange, routing_key=routing_key)
    finally:
        await broker.stop()


@asynccontextmanager
async def raw_hop(settings: Settings, meter: Meter) -> AsyncIterator[Publish]:
    url = settings.rabbitmq_url
    async with await aio_pika.connect(url) as consuming, await aio_pika.connect(url) as publishing:
        channel = await consuming.channel()
        await channel.set_qos(prefetch_count=settings.emporium_prefetch)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            meter.consumed(message.body)

        await (await channel.get_queue(RAW)).consume(on_message)
        confirmed = await publishing.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await confirmed.get_exchange(COMMANDS.name)

        async def publish_raw(ping: BenchPing) -> None:
            message = aio_pika.Message(
                ping.body(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                message_id=new_id(),
                type=ping.TYPE,
            )
            await exchange.publish(message, routing_key=RAW, mandatory=True)

        yield publish_raw


class _Finished(BaseMiddleware):
    """Reports each message to the meter once its handler returned (and so had acked it)."""

    def __init__(self, msg: Any, /, *, context: Any, meter: Meter) -> None:
        super().__init__(msg, context=context)
        self.meter = meter

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        result = await call_next(msg)
        self.meter.consumed(msg.body)
        return result


@asynccontextmanager
async def _publisher(settings: Settings) -> AsyncIterator[RabbitBroker]:
    broker = make_broker(settings, app_name="emporium-bench-publisher")
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.stop()


@asynccontextmanager
async def faststream_hop(settings: Settings, meter: Meter) -> AsyncIterator[Publish]:
    consumer = make_broker(settings, app_name="emporium-bench")
    consumer.add_middleware(partial(_Finished, meter=meter))

    # Subscribed the way the runtime subscribes (manual acks on the raw message), minus the runtime.
    async def ack(message: RabbitMessage) -> None:
        await message.raw_message.ack()

    queue = _baseline_queue(settings, FASTSTREAM).rabbit_queue()
    consumer.subscriber(queue, ack_policy=AckPolicy.MANUAL, no_reply=True)(ack)
    await consumer.start()
    try:
        async with _publisher(settings) as broker:

            async def publish_faststream(ping: BenchPing) -> None:
                await publish_body(
                    broker,
                    ping.body(),
                    exchange=COMMANDS.name,
                    routing_key=FASTSTREAM,
                    envelope=Envelope.first(ping),
                )

            yield publish_faststream
    finally:
        await consumer.stop()


@asynccontextmanager
async def runtime_hop(settings: Settings, meter: Meter, *, batch_size: int | None = None) -> AsyncIterator[Publish]:
    """The actor runtime: inbox, handler and outbox in one transaction, published with confirms
    before the ack; ``batch_size`` messages at most per transaction (default: the settings')."""
    if batch_size is not None:
        settings = settings.model_copy(update={"emporium_batch_size": batch_size})
    host = ActorHost([bench_actor], settings, app_name="emporium-bench")
    host.broker.add_middleware(partial(_Finished, meter=meter))
    await host.start()
    try:
        async with _publisher(settings) as broker:

            async def publish_command(ping: BenchPing) -> None:
                await publish(broker, ping, Envelope.first(ping))

            yield publish_command
    finally:
        await host.stop()


def hops(settings: Settings) -> tuple[tuple[str, Hop], ...]:
    return (
        ("raw aio-pika", raw_hop),
        ("FastStream", faststream_hop),
        ("actor runtime, 1 per transaction", partial(runtime_hop, batch_size=1)),
        (f"actor runtime, group commit ({settings.emporium_batch_size})", runtime_hop),
    )


# --- the run --------------------------------------------------------------------------------------


@asynccontextmanager
async def _scratch_vhost(settings: Settings) -> AsyncIterator[Settings]:
    """The settings moved to a vhost of the run's own, deleted (with all in it) at the end."""
    vhost = f"emporium-bench-{uuid.uuid4().hex[:8]}"
    user = unquote(urlsplit(settings.rabbitmq_url).username or "guest")
    async with management_client(settings) as management:
        (await management.put(f"/api/vhosts/{vhost}")).raise_for_status()
        try:
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            (await management.put(f"/api/permissions/{vhost}/{user}", json=permissions)).raise_for_status()
            yield settings.model_copy(update={"rabbitmq_url": with_vhost(settings.rabbitmq_url, vhost)})
        finally:
            (await management.delete(f"/api/vhosts/{vhost}")).raise_for_status()


@asynccontextmanager
async def _scratch_database(settings: Settings, actors: Iterable[str]) -> AsyncIterator[Settings]:
    """The settings moved to a database prefix of the run's own; these actors' databases are dropped
    at the end."""
    scratch = settings.model_copy(update={"emporium_db_prefix": f"bench{uuid.uuid4().hex[:8]}"})
    try:
        yield scratch
    finally:
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
        try:
            for actor in actors:
                await client.drop_database(scratch.database_name(actor))
        finally:
            await client.close()


def _transactions() -> tuple[float, float]:
    """Seconds spent in the bench actor's committed transactions so far, and the messages they applied."""
    labels = {"actor": bench_actor.name}
    spent = REGISTRY.get_sample_value("emporium_transaction_duration_seconds_sum", labels) or 0.0
    count = REGISTRY.get_sample_value("emporium_batch_messages_sum", labels) or 0.0
    return spent, count


async def _measured_round(
    name: str, publish_one: Publish, meter: Meter, messages: int, concurrency: int
) -> HopFigures:
    spent_before, count_before = _transactions()
    latencies, seconds = await run_round(publish_one, meter, messages, concurrency)
    spent, count = _transactions()
    transaction_ms = (spent - spent_before) / (count - count_before) * 1000 if count > count_before else None
    return HopFigures.of(name, latencies, seconds, transaction_ms)


async def run_hops(
    settings: Settings, *, messages: int, concurrency: int, warmup: int, progress: Progress
) -> list[HopFigures]:
    """Every hop in turn, in a scratch vhost and database: a warm-up round, then the measured round."""
    results = []
    async with (
        _scratch_vhost(settings) as on_vhost,
        _scratch_database(on_vhost, [bench_actor.name]) as scratch,
    ):
        await _declare_baseline_queues(scratch)
        for name, hop in hops(scratch):
            task = progress.add_task(name, total=warmup + messages)
            meter = Meter(concurrency, tick=partial(progress.advance, task))
            async with hop(scratch, meter) as publish_one:
                # Warm-up: connections, channels, the first transactions, Python's caches.
                await run_round(publish_one, meter, warmup, concurrency)
                results.append(await _measured_round(name, publish_one, meter, messages, concurrency))
    return results


@app.command("hop")
def hop_command(
    messages: Annotated[int, typer.Option(min=10, help="Messages measured per hop.")] = 2000,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Messages in flight at once; default: EMPORIUM_PREFETCH.")
    ] = None,
    warmup: Annotated[
        int, typer.Option(min=0, help="Messages sent through each hop before measuring.")
    ] = 200,
) -> None:
    """Throughput and p50/p99 latency of a raw aio-pika hop, a FastStream hop and the actor runtime's
    (one message per transaction, then group commit), beside the database's own ceilings."""
    settings = get_settings()
    configure_logging("WARNING")  # the runtime's INFO lines would cost time and garble the progress bars
    in_flight = concurrency or settings.emporium_prefetch

    async def run(progress: Progress) -> tuple[list[HopFigures], DatabaseCeiling]:
        figures = await run_hops(settings, messages=messages, concurrency=in_flight, warmup=warmup, progress=progress)
        return figures, await database_ceiling(settings, batch=settings.emporium_batch_size)

    with Progress(console=console) as progress:
        try:
            figures, ceiling = asyncio.run(run(progress))
        except BenchmarkError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(figures_table(figures, ceiling, concurrency=in_flight, prefetch=settings.emporium_prefetch))
    console.print(summary(*figures, ceiling))


# === emporium bench saga ==========================================================================

SKUS = tuple(f"BENCH-{n:02d}" for n in range(20))
PRICE_CENTS = 1_250
ENDED = frozenset({OrderDelivered.TYPE, OrderCancelled.TYPE})
# RabbitMQ's management plugin refreshes its counts every 5 s (collect_statistics_interval's default):
# counts that stayed the same for longer than that have caught up with everything before.
STATS_INTERVAL_S = 5.0
DEFAULT_EXCHANGE = "(default)"


def saga_orders(count: int, skus: Sequence[str] = SKUS) -> list[PlaceOrder]:
    """``count`` orders of two lines (neighbouring SKUs, one unit each) from ten customers."""
    if len(skus) < 2:
        raise ValueError("orders of two lines need at least two SKUs")
    return [
        PlaceOrder(
            order_id=f"bench-order-{n:06d}",
            customer_id=f"bench-customer-{n % 10}",
            lines=[Line(sku=skus[(n + k) % len(skus)], quantity=1) for k in range(2)],
            request_digest="bench-saga",
        )
        for n in range(count)
    ]


def stock_needed(orders: Iterable[PlaceOrder]) -> dict[str, int]:
    """The units of each SKU the orders ask for: with that much in stock, none is short."""
    needed: Counter[str] = Counter()
    for order in orders:
        for line in order.lines:
            needed[line.sku] += line.quantity
    return dict(needed)


def step_seconds(view: OrderView, start: OrderStatus, end: OrderStatus) -> float | None:
    """Seconds from the order's first ``start`` step to its first ``end`` step; None if it lacks one."""
    reached: dict[str, datetime] = {}
    for step in view.history:
        reached.setdefault(step.status, step.at)
    if start not in reached or end not in reached:
        return None
    return (reached[end] - reached[start]).total_seconds()


def _grown(later: Mapping[K, int], earlier: Mapping[K, int]) -> dict[K, int]:
    """How much each count grew; counts that did not change are left out."""
    return {key: value - earlier.get(key, 0) for key, value in later.items() if value != earlier.get(key, 0)}


def _by(counts: Mapping[tuple[str, ...], int], position: int) -> Counter[str]:
    """Counts keyed by tuples, added up by the tuple's element at ``position``."""
    summed: Counter[str] = Counter()
    for key, count in counts.items():
        summed[key[position]] += count
    return summed


@dataclass(frozen=True)
class Counts:
    """What the run's counters say at one moment; ``since`` makes two readings the cost in between."""

    published: int  # RabbitMQ: messages clients published into the vhost
    delivered: int  # RabbitMQ: messages handed to consumers in the vhost
    parked: int  # RabbitMQ: events no queue was bound for, kept in unrouted-events
    published_to: Mapping[str, int]  # RabbitMQ: messages published, by exchange
    taken: Mapping[tuple[str, str, str], int]  # the runtime: (actor, type, outcome) -> messages
    # MongoDB commands started, by where they went (an actor, or "admin" for a transaction's end) and name
    mongo_commands: Mapping[tuple[str, str], int]

    def since(self, earlier: Counts) -> Counts:
        return Counts(
            self.published - earlier.published,
            self.delivered - earlier.delivered,
            self.parked - earlier.parked,
            _grown(self.published_to, earlier.published_to),
            _grown(self.taken, earlier.taken),
            _grown(self.mongo_commands, earlier.mongo_commands),
        )


class Quiet:
    """Says when a reading has stayed the same for ``for_s`` seconds."""

    _NOTHING_YET = object()

    def __init__(self, for_s: float) -> None:
        self.for_s = for_s
        self._last: object = self._NOTHING_YET
        self._since = 0.0

    def still(self, reading: object, now: float) -> bool:
        if reading != self._last:
            self._last, self._since = reading, now
            return False
        return now - self._since >= self.for_s


@dataclass(frozen=True)
class SagaFigures:
    placed: int
    delivered: int
    cancelled: int
    seconds: float  # from the first order sent to the last order's end seen
    cost: Counts  # from just before the first order until everything was quiet again
    to_confirmed_s: tuple[float, ...]
    to_delivered_s: tuple[float, ...]

    @classmethod
    def of(cls, views: Sequence[OrderView], seconds: float, cost: Counts) -> SagaFigures:
        statuses = Counter(view.status for view in views)

        def spans(end: OrderStatus) -> tuple[float, ...]:
            found = (step_seconds(view, "placed", end) for view in views)
            return tuple(span for span in found if span is not None)

        return cls(
            len(views), statuses["delivered"], statuses["cancelled"], seconds, cost,
            spans("confirmed"), spans("delivered"),
        )

    def per_order(self, count: int) -> float:
        """A count shared out over the delivered orders."""
        if not self.delivered:
            raise ValueError("no order was delivered")
        return count / self.delivered

    @property
    def transactions(self) -> int:
        return _by(self.cost.mongo_commands, 1)["commitTransaction"]


def _ms(seconds: Sequence[float]) -> str:
    if not seconds:
        return "-"
    return f"p50 {percentile(seconds, 0.50) * 1000:,.0f} ms, p99 {percentile(seconds, 0.99) * 1000:,.0f} ms"


def saga_table(figures: SagaFigures, *, concurrency: int, carrier_step_ms: int) -> Table:
    """The run at a glance: orders, time, latencies."""
    table = Table(
        title=f"{figures.placed} orders, {concurrency} in flight, carrier step {carrier_step_ms} ms"
    )
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("orders delivered / cancelled", f"{figures.delivered} / {figures.cancelled}")
    table.add_row(
        "wall time", f"{figures.seconds:.2f} s ({figures.delivered / figures.seconds:.1f} delivered orders/s)"
    )
    table.add_row("placed → confirmed", _ms(figures.to_confirmed_s))
    table.add_row("placed → delivered", _ms(figures.to_delivered_s))
    return table


def cost_table(figures: SagaFigures) -> Table:
    """What a delivered order cost the broker and the database, and who counted it."""
    cost = figures.cost
    table = Table(title="cost per delivered order")
    table.add_column("measure", no_wrap=True)
    table.add_column("total", justify="right")
    table.add_column("per order", justify="right")
    table.add_column("counted by")
    rows = (
        ("messages published", cost.published, "RabbitMQ: vhost publish"),
        ("messages delivered to actors", cost.delivered, "RabbitMQ: vhost deliver_get"),
        ("events no actor takes", cost.parked, "RabbitMQ: unrouted-events publish"),
        ("messages taken by actors", sum(cost.taken.values()), "runtime: emporium_messages_total"),
        ("MongoDB commands (round trips)", sum(cost.mongo_commands.values()), "pymongo CommandListener"),
        ("MongoDB transactions", figures.transactions, "commitTransaction commands"),
    )
    for measure, total, source in rows:
        table.add_row(measure, f"{total:,}", f"{figures.per_order(total):.1f}", source)
    return table


def breakdown_table(
    figures: SagaFigures, title: str, headers: Sequence[str], rows: Iterable[tuple[Sequence[str], int]]
) -> Table:
    """Counts by some key, biggest first, with their share per delivered order."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="left" if header == headers[0] else "right")
    table.add_column("total", justify="right")
    table.add_column("per order", justify="right")
    for cells, count in sorted(rows, key=lambda row: (-row[1], row[0])):
        table.add_row(*cells, f"{count:,}", f"{figures.per_order(count):.2f}")
    return table


def breakdowns(figures: SagaFigures, *, top_commands: int = 8) -> list[Table]:
    """Messages published by exchange and taken by type; MongoDB commands by actor and by name."""
    cost = figures.cost
    takers: dict[str, set[str]] = {}
    for actor, type_, _ in cost.taken:
        takers.setdefault(type_, set()).add(actor)
    taken_by_actor = _by(cost.taken, 0)
    commands = _by(cost.mongo_commands, 1)

    def actor_row(actor: str, count: int) -> tuple[Sequence[str], int]:
        # "admin" gets the transactions' commits and aborts; no actor takes messages there.
        taken = taken_by_actor[actor]
        if not taken:
            return (actor, "-", "-"), count
        return (actor, f"{taken:,}", f"{count / taken:.1f}"), count

    return [
        breakdown_table(figures, "messages published, by exchange", ["exchange"],
                        (((name,), count) for name, count in cost.published_to.items())),
        breakdown_table(figures, "messages taken by actors, by type", ["type → actors"],
                        (((f"{type_} → {', '.join(sorted(takers[type_]))}",), count)
                         for type_, count in _by(cost.taken, 1).items())),
        breakdown_table(figures, "MongoDB commands, by actor", ["actor", "messages taken", "per message"],
                        (actor_row(actor, count) for actor, count in _by(cost.mongo_commands, 0).items())),
        breakdown_table(figures, f"MongoDB commands, top {top_commands} by name", ["command"],
                        (((name,), count) for name, count in commands.most_common(top_commands))),
    ]


def outcomes_line(taken: Mapping[tuple[str, str, str], int]) -> str:
    """How the actors' messages ended, with the types of those not simply applied."""
    parts = []
    for outcome, count in sorted(_by(taken, 2).items()):
        types = _by({key: n for key, n in taken.items() if key[2] == outcome}, 1)
        detail = ", ".join(f"{type_} {n:,}" for type_, n in types.most_common())
        parts.append(f"{outcome} {count:,}" if outcome == "applied" else f"{outcome} {count:,} ({detail})")
    return "messages taken, by outcome: " + "; ".join(parts)


def saga_notes(figures: SagaFigures) -> str:
    return (
        f"{outcomes_line(figures.cost.taken)}\n"
        "published: every message a client put into the run's vhost: the bench's PlaceOrder (standing in "
        "for the edge), the actors' events, timers and retries sent to delay queues, dead letters; an event "
        "counts once however many actors subscribe. delivered / taken: once per consuming actor, and a timer "
        "again when it comes back from its delay queue (the bench's own copies of the orders' ends are left "
        "out of deliver_get). The (default) exchange takes the timers and retries sent to delay queues. "
        "Events no actor subscribes to are parked in unrouted-events (kept a day).\n"
        "MongoDB: every command the actors' client started (one round trip each; a transaction's commit or "
        "abort is one, sent to the admin database), from just before the first order until the system was "
        "quiet again (notifications and analytics included). An abort is a handler that failed (retried "
        "later) or lost a write conflict to a concurrent one (run again at once).\n"
        "not in these figures: each order's deadline timer coming back (the deadline is set past the run) "
        "and the outbox sweeper's periodic reads (also set past the run: they depend on time, not orders).\n"
        "latency: from each order's history in the orders read model (its steps' times)."
    )


# --- counting ------------------------------------------------------------------------------------


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process's clients start (a round trip each), by database and name."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.database_name, event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Counted when started."""


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
    return Counts(
        totals.get("publish", 0),
        totals.get("deliver_get", 0),
        parking.get("message_stats", {}).get("publish", 0),
        published_to,
        taken_by_actors(),
        mongo_commands,
    )


async def _poll(
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
        return await _poll(
            read, lambda counts: quiet.still(counts, time.monotonic()), what=f"{what} to go quiet",
            timeout_s=120, every_s=0.5,
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
    async with await aio_pika.connect(url) as connection:
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
            orders, place, in_flight=watch.in_flight, concurrency=concurrency, until=watch.all_ended,
            timeout_s=timeout_s,
        )
    except TimeoutError as exc:
        problem = f"only {len(watch.ends)} of {len(orders)} orders ended in {timeout_s:.0f}s"
        raise BenchmarkError(problem) from exc
    return watch.last_end_at - started


async def _publish_and_see_applied(
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
            {(actor, type_): count for (actor, type_, outcome), count in taken_by_actors().items()
             if outcome == "applied"}
        )

    before = applied()
    for message in messages:
        await publish(broker, message, Envelope.first(message))

    async def grown() -> Counter[tuple[str, str]]:
        return applied() - before

    await _poll(
        grown, lambda seen: all(seen[key] >= count for key, count in expected.items()),
        what=f"{len(messages)} {messages[0].TYPE} to be applied", timeout_s=30, every_s=0.05,
    )


async def _stock_the_shop(
    broker: RabbitBroker, actors: Sequence[Actor[Any]], orders: Iterable[PlaceOrder]
) -> None:
    """Announce the products (as catalog would) to inventory and orders, then restock them."""
    needed = stock_needed(orders)
    products = [
        ProductCreated(
            product_id=f"product-{sku.lower()}", sku=sku, name=f"bench item {sku}", category="bench",
            price_cents=PRICE_CENTS, currency="EUR",
        )
        for sku in needed
    ]
    await _publish_and_see_applied(broker, actors, products)
    # Only a SKU inventory knows can be restocked.
    restocks = [Restock(sku=sku, quantity=units) for sku, units in needed.items()]
    await _publish_and_see_applied(broker, actors, restocks)


async def _order_views(settings: Settings, order_ids: Iterable[str]) -> list[OrderView]:
    async with requesting(settings) as requester:
        asked = (requester.ask(GetOrder(order_id=order_id), OrderView) for order_id in order_ids)
        return list(await asyncio.gather(*asked))


def _ticker(progress: Progress, description: str, total: int) -> Callable[[], None]:
    """A new progress bar, and what moves it on by one."""
    return partial(progress.advance, progress.add_task(description, total=total))


@asynccontextmanager
async def _running(host: ActorHost) -> AsyncIterator[ActorHost]:
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


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
        _scratch_vhost(settings) as on_vhost,
        _scratch_database(on_vhost, ACTORS) as scratch,
        served() as provider,
        management_client(settings) as management,
    ):
        run_settings = _saga_settings(scratch, provider.url, carrier_step_ms)
        read_counts = partial(_read_counts, management, run_settings, commands)
        async with (
            _running(ActorHost(actors, run_settings, app_name="emporium-bench-saga")),
            _publisher(run_settings) as broker,
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
) -> None:
    """Whole orders through every actor: messages and MongoDB round trips per order, and saga latencies."""
    settings = get_settings()
    # Retries are warnings, and counted in the figures: in the log they would only garble the progress bars.
    configure_logging("ERROR")
    with Progress(console=console) as progress:
        try:
            figures = asyncio.run(
                run_saga(
                    settings, orders=orders, warmup=warmup, concurrency=concurrency,
                    carrier_step_ms=carrier_step_ms, progress=progress,
                )
            )
        except BenchmarkError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(saga_table(figures, concurrency=concurrency, carrier_step_ms=carrier_step_ms))
    console.print(cost_table(figures))
    for table in breakdowns(figures):
        console.print(table)
    console.print(saga_notes(figures))


# === emporium bench hot-sku =======================================================================

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
            order_id=f"hot-{n}", customer_id="bench-customer", currency="EUR", total_cents=PRICE_CENTS,
            lines=[OrderLine(sku=HOT_SKU, quantity=1, unit_price_cents=PRICE_CENTS)],
        )
        for n in range(count)
    ]


def _inventory_outcomes() -> Counter[str]:
    return Counter(
        {outcome: count for (actor, type_, outcome), count in taken_by_actors().items()
         if actor == "inventory" and type_ == OrderPlaced.TYPE}
    )


async def drain_hot_sku(settings: Settings, *, orders: int, units: int, prefetch: int, progress: Progress) -> DrainFigures:
    """A burst of ``orders`` reservations of one SKU holding ``units``, drained by one inventory
    process taking ``prefetch`` messages at once: how fast it got through them."""
    inventory = ACTORS["inventory"]
    async with _scratch_vhost(settings) as on_vhost, _scratch_database(on_vhost, [inventory.name]) as scratch:
        run_settings = scratch.model_copy(update={"emporium_prefetch": prefetch})
        async with _running(ActorHost([inventory], run_settings, app_name="emporium-bench-hot-sku")), _publisher(
            run_settings
        ) as broker:
            product = ProductCreated(
                product_id="product-hot", sku=HOT_SKU, name="the hot one", category="bench",
                price_cents=PRICE_CENTS, currency="EUR",
            )
            await _publish_and_see_applied(broker, [inventory], [product])
            await _publish_and_see_applied(broker, [inventory], [Restock(sku=HOT_SKU, quantity=units)])
            before = _inventory_outcomes()
            task = progress.add_task(f"prefetch {prefetch}: reservations applied", total=orders)
            started = time.perf_counter()
            await asyncio.gather(*(publish(broker, o, Envelope.first(o, o.order_id)) for o in _hot_orders(orders)))

            async def applied() -> Counter[str]:
                seen = _inventory_outcomes() - before
                progress.update(task, completed=seen["applied"])
                return seen

            seen = await _poll(
                applied, lambda seen: seen["applied"] >= orders, what=f"{orders} reservations",
                timeout_s=600, every_s=0.05,
            )
            seconds = time.perf_counter() - started
            client: AsyncMongoClient = AsyncMongoClient(run_settings.mongodb_url)
            try:
                stock = await client[run_settings.database_name(inventory.name)]["stock"].find_one({"_id": HOT_SKU})
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
            str(figures.prefetch), str(figures.orders), f"{figures.per_second:.1f}", f"{ratio:.2f}x",
            str(figures.reserved), str(figures.retried),
        )
    table.caption = f"the database's own ceiling: {ceiling:.0f} small transactions/s one at a time"
    return table


@app.command("hot-sku")
def hot_sku_command(
    orders: Annotated[int, typer.Option(min=10, max=20_000, help="Reservations in the burst.")] = 1000,
    units: Annotated[int, typer.Option(min=1, help="Units of the SKU on hand (the rest are rejected).")] = 300,
    prefetch: Annotated[
        int | None, typer.Option(min=2, help="Messages in flight for the second run; default: EMPORIUM_PREFETCH.")
    ] = None,
) -> None:
    """A burst of orders for one SKU drained by inventory with one message in flight, then many."""
    settings = get_settings()
    configure_logging("ERROR")
    many = prefetch or settings.emporium_prefetch

    async def run(progress: Progress) -> tuple[DrainFigures, DrainFigures, float]:
        single = await drain_hot_sku(settings, orders=orders, units=units, prefetch=1, progress=progress)
        concurrent = await drain_hot_sku(settings, orders=orders, units=units, prefetch=many, progress=progress)
        return single, concurrent, (await database_ceiling(settings, batch=1)).single_per_s

    with Progress(console=console) as progress:
        try:
            single, concurrent, ceiling = asyncio.run(run(progress))
        except BenchmarkError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(hot_sku_table(single, concurrent, ceiling, units))
