"""`emporium bench hop`: what one hop through the actor runtime costs next to plain aio-pika.

Three hops do the same broker work (persistent messages, publisher confirms, ``mandatory``, a quorum
queue with the arguments of an actor's work queue, the same prefetch, one ack per message):

1. raw aio-pika: a channel publishes, a consumer callback acks;
2. FastStream: the broker factory and subscription style the runtime uses, a handler that only acks;
3. actor runtime: an ActorHost running a do-nothing actor, so each message also goes through envelope
   validation and the MongoDB transaction (inbox insert) before its ack.

(2) against (1) is the price of FastStream; (3) against (2) is what the runtime adds, most of it the
database. The runtime also times each transaction itself (emporium_handler_duration_seconds), which
gives the database's share directly.

A fixed number of messages is kept in flight (published, not yet consumed), so latencies measure a
hop, not a backlog. Latency runs from just before the publish call to just after the consumer's ack
(for the runtime hop: after commit and ack), on one process clock. Everything runs in a vhost and a
database created for the run and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar
from urllib.parse import unquote, urlsplit

import aio_pika
import typer
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from prometheus_client import REGISTRY
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from actors.runtime.actor import Actor, UnitOfWork
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.store import Store
from brokers.envelope import Command, Envelope, new_id
from brokers.factory import make_broker, publish, publish_body
from brokers.logs import configure_logging
from brokers.settings import Settings, get_settings
from brokers.topology import COMMANDS, QueueSpec, declare_exchanges
from ops.dlq import management_client, with_vhost

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
async def _do_nothing(ping: BenchPing, work: UnitOfWork[Store]) -> None:
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
class DatabaseShare:
    """How much of a runtime hop the database takes, seen two ways.

    By difference: the runtime hop against the FastStream hop (the runtime's own Python work is in
    that difference too, but is small next to the transaction). Directly: the transaction time the
    runtime measures for each message, against the hop's mean latency.
    """

    of_time_per_message: float  # a share of 1 / throughput
    of_p50: float
    transaction_of_mean_latency: float

    @classmethod
    def of(cls, without_db: HopFigures, with_db: HopFigures) -> DatabaseShare:
        if with_db.transaction_ms is None:
            raise ValueError(f"the {with_db.name} hop has no transaction time")
        with_time, without_time = 1 / with_db.per_second, 1 / without_db.per_second
        return cls(
            (with_time - without_time) / with_time,
            (with_db.p50_ms - without_db.p50_ms) / with_db.p50_ms,
            with_db.transaction_ms / with_db.mean_ms,
        )


def figures_table(hops: Sequence[HopFigures], *, concurrency: int, prefetch: int) -> Table:
    """The hops side by side; ratios are against the first one (the raw baseline)."""
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
    return table


def summary(raw: HopFigures, faststream: HopFigures, runtime: HopFigures) -> str:
    share = DatabaseShare.of(faststream, runtime)
    return (
        f"throughput vs raw aio-pika: FastStream {faststream.per_second / raw.per_second:.2f}x, "
        f"actor runtime {runtime.per_second / raw.per_second:.2f}x\n"
        f"runtime hop vs FastStream hop: what the runtime adds (envelope checks, the MongoDB transaction) is "
        f"{share.of_time_per_message:.0%} of its time per message and {share.of_p50:.0%} of its p50 latency\n"
        f"measured directly: the transaction (inbox insert + commit) takes {runtime.transaction_ms:.2f} ms "
        f"per message, {share.transaction_of_mean_latency:.0%} of the runtime hop's mean latency "
        f"({runtime.mean_ms:.2f} ms)\n"
        "latency: from just before the publish call to just after the consumer's ack "
        "(runtime hop: after its commit and ack); tx ms: mean transaction time per message"
    )


# --- driving a hop --------------------------------------------------------------------------------

Publish = Callable[[BenchPing], Awaitable[None]]


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


async def run_round(
    publish_one: Publish, meter: Meter, messages: int, concurrency: int
) -> tuple[list[float], float]:
    """Send ``messages`` through a hop; returns their latencies and the seconds the round took."""
    meter.begin(messages)
    sequence = iter(range(messages))

    async def publisher() -> None:
        for seq in sequence:
            await meter.in_flight.acquire()
            await publish_one(BenchPing(seq=seq, sent_at=time.perf_counter()))

    started = time.perf_counter()
    # Slower than 50 msg/s means something is broken, not slow.
    timeout_s = 30 + messages / 50
    try:
        await asyncio.wait_for(
            asyncio.gather(*(publisher() for _ in range(concurrency)), meter.done.wait()), timeout_s
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
async def runtime_hop(settings: Settings, meter: Meter) -> AsyncIterator[Publish]:
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


HOPS: tuple[tuple[str, Hop], ...] = (
    ("raw aio-pika", raw_hop),
    ("FastStream", faststream_hop),
    ("actor runtime", runtime_hop),
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
async def _scratch_database(settings: Settings) -> AsyncIterator[Settings]:
    """The settings moved to a database prefix of the run's own, the bench database dropped at the end."""
    scratch = settings.model_copy(update={"emporium_db_prefix": f"bench{uuid.uuid4().hex[:8]}"})
    try:
        yield scratch
    finally:
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
        try:
            await client.drop_database(scratch.database_name(bench_actor.name))
        finally:
            await client.close()


def _transactions() -> tuple[float, float]:
    """Seconds spent in the bench actor's transactions so far, and how many there were."""
    labels = {"actor": bench_actor.name, "type": BenchPing.TYPE}
    spent = REGISTRY.get_sample_value("emporium_handler_duration_seconds_sum", labels) or 0.0
    count = REGISTRY.get_sample_value("emporium_handler_duration_seconds_count", labels) or 0.0
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
    async with _scratch_vhost(settings) as on_vhost, _scratch_database(on_vhost) as scratch:
        await _declare_baseline_queues(scratch)
        for name, hop in HOPS:
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
    """Throughput and p50/p99 latency of a raw aio-pika hop, a FastStream hop and an actor-runtime hop."""
    settings = get_settings()
    configure_logging("WARNING")  # the runtime's INFO lines would cost time and garble the progress bars
    in_flight = concurrency or settings.emporium_prefetch
    with Progress(console=console) as progress:
        try:
            hops = asyncio.run(
                run_hops(settings, messages=messages, concurrency=in_flight, warmup=warmup, progress=progress)
            )
        except BenchmarkError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(figures_table(hops, concurrency=in_flight, prefetch=settings.emporium_prefetch))
    console.print(summary(*hops))
