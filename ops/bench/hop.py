"""`emporium bench hop`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated, Any, ClassVar

import aio_pika
import typer
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from prometheus_client import REGISTRY
from rich.progress import Progress
from rich.table import Table

from actors.runtime.actor import Actor, Work
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.store import Store
from brokers.envelope import Command, Envelope, new_id
from brokers.factory import make_broker, named_url, publish, publish_body, subscribe_raw
from brokers.logs import configure_logging
from brokers.settings import Settings, get_settings
from brokers.topology import COMMANDS, QueueSpec, declare_exchanges
from ops.bench.common import (
    BENCH_APP,
    BenchmarkError,
    DatabaseCeiling,
    app,
    console,
    database_ceiling,
    errors,
    percentile,
    publisher,
    scratch_database,
    scratch_vhost,
    send_paced,
)


class BenchPing(Command):
    """The benchmark's message. Kept out of the contract registry: it exists only inside a run."""

    TYPE: ClassVar[str] = "bench.ping"
    seq: int
    sent_at: float  # time.perf_counter() of the publishing process, which is also the consuming one


bench_actor: Actor[Store] = Actor("bench", Store)


@bench_actor.handles(BenchPing)
async def _do_nothing(ping: BenchPing, work: Work[Store]) -> None:
    """The runtime's work around this handler (inbox, transaction, ack) is what is measured."""


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
        table.add_row(
            name, f"{per_second:,.0f}", "-", "-", "-", f"{per_second / baseline.per_second:.2f}x", "-"
        )
    return table


def as_json(hops: Sequence[HopFigures], ceiling: DatabaseCeiling, *, concurrency: int) -> dict[str, Any]:
    """What the table shows, for scripts (``bench hop --json``): ratios against the first hop (raw)."""
    baseline = hops[0]
    return {
        "concurrency": concurrency,
        "hops": [
            {
                **asdict(hop),
                "per_second": hop.per_second,
                "per_second_vs_raw": hop.per_second / baseline.per_second,
                "p50_vs_raw": hop.p50_ms / baseline.p50_ms,
            }
            for hop in hops
        ],
        "database_ceiling": asdict(ceiling),
    }


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

    async def send(seq: int) -> None:
        # Timed from here, once a slot is free: the latency of a hop, not of the wait for a slot.
        await publish_one(BenchPing(seq=seq, sent_at=time.perf_counter()))

    started = time.perf_counter()
    # Slower than 50 msg/s means something is broken, not slow.
    timeout_s = 30 + messages / 50
    try:
        await send_paced(
            range(messages),
            send,
            in_flight=meter.in_flight,
            concurrency=concurrency,
            until=meter.done,
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
    [work] = topology_of(bench_actor, settings).work
    return QueueSpec(name, work.arguments, ((COMMANDS.name, name),))


RAW = "bench-raw"
FASTSTREAM = "bench-faststream"


async def _declare_baseline_queues(settings: Settings) -> None:
    broker = make_broker(settings, app_name=BENCH_APP, role="declarations")
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
    consume_url = named_url(settings.rabbitmq_url, BENCH_APP, "raw consumer")
    publish_url = named_url(settings.rabbitmq_url, BENCH_APP, "raw publisher")
    async with (
        await aio_pika.connect(consume_url) as consuming,
        await aio_pika.connect(publish_url) as publishing,
    ):
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
async def faststream_hop(settings: Settings, meter: Meter) -> AsyncIterator[Publish]:
    consumer = make_broker(settings, app_name=BENCH_APP, role="faststream consumer")
    consumer.add_middleware(partial(_Finished, meter=meter))

    # Subscribed the way the runtime subscribes (manual acks on the raw message), minus the runtime.
    async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    subscribe_raw(consumer, _baseline_queue(settings, FASTSTREAM).rabbit_queue(), ack)
    await consumer.start()
    try:
        async with publisher(settings) as broker:

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
async def runtime_hop(
    settings: Settings, meter: Meter, *, batch_size: int | None = None
) -> AsyncIterator[Publish]:
    """The actor runtime: inbox, handler and outbox in one transaction, published with confirms
    before the ack; ``batch_size`` messages at most per transaction (default: the settings')."""
    if batch_size is not None:
        settings = settings.model_copy(update={"emporium_batch_size": batch_size})
    host = ActorHost([bench_actor], settings, app_name="emporium-bench")
    host.broker.add_middleware(partial(_Finished, meter=meter))
    await host.start()
    try:
        async with publisher(settings) as broker:

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
    settings: Settings,
    *,
    messages: int,
    concurrency: int,
    warmup: int,
    progress: Progress,
    chosen: Sequence[tuple[str, Hop]] | None = None,
) -> list[HopFigures]:
    """Every hop in turn (by default: ``hops``), in a scratch vhost and database: a warm-up round,
    then the measured round."""
    results = []
    async with (
        scratch_vhost(settings) as on_vhost,
        scratch_database(on_vhost, [bench_actor.name]) as scratch,
    ):
        await _declare_baseline_queues(scratch)
        for name, hop in chosen or hops(scratch):
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
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON (progress and errors on stderr).")
    ] = False,
) -> None:
    """Throughput and p50/p99 latency of a raw aio-pika hop, a FastStream hop and the actor runtime's
    (one message per transaction, then group commit), beside the database's own ceilings."""
    settings = get_settings()
    configure_logging("WARNING")  # the runtime's INFO lines would cost time and garble the progress bars
    in_flight = concurrency or settings.emporium_prefetch

    async def run(progress: Progress) -> tuple[list[HopFigures], DatabaseCeiling]:
        figures = await run_hops(
            settings, messages=messages, concurrency=in_flight, warmup=warmup, progress=progress
        )
        return figures, await database_ceiling(settings, batch=settings.emporium_batch_size)

    with Progress(console=errors, disable=json_output) as progress:
        try:
            figures, ceiling = asyncio.run(run(progress))
        except BenchmarkError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    if json_output:
        typer.echo(json.dumps(as_json(figures, ceiling, concurrency=in_flight), indent=2))
        return
    console.print(figures_table(figures, ceiling, concurrency=in_flight, prefetch=settings.emporium_prefetch))
    raw, faststream, single, grouped = figures  # the default hops, in their order
    console.print(summary(raw, faststream, single, grouped, ceiling))
