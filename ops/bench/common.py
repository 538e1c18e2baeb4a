"""What every benchmark shares: a run's own vhost and databases, percentiles, the database's ceiling."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import typer
from faststream.rabbit import RabbitBroker
from pymongo import UpdateOne
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from rich.console import Console

from actors.runtime.host import ActorHost
from brokers.envelope import new_id
from brokers.factory import make_broker
from brokers.management import management_client, with_vhost
from brokers.settings import Settings

T = TypeVar("T")
# The bench's own connections, by this name in the RabbitMQ UI (its actor hosts are named apart).
BENCH_APP = "emporium-bench"
app = typer.Typer(help="Measure the cost of the actor runtime.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)  # errors and progress: stdout keeps what was asked for


class BenchmarkError(RuntimeError):
    """A hop stalled: its messages stopped coming through."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie, interpolating between neighbours
    (statistics.quantiles' inclusive method), to a thousandth."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    if len(values) == 1 or fraction in (0.0, 1.0):  # quantiles needs two points and cuts inside
        return min(values) if fraction == 0.0 else max(values)
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


@dataclass(frozen=True)
class DatabaseCeiling:
    """What the database alone allows, measured in the same run: the work of one message (its id
    recorded as applied, a state update, an outbox entry) one transaction after another, one message
    per transaction and then ``batch`` per transaction (one bulk_write, and one outbox record holding
    every id and entry, as the runtime writes them)."""

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
                updates = [
                    UpdateOne({"_id": state}, {"$inc": {"n": 1}}, upsert=True) for state in states[:size]
                ]
                await db["state"].bulk_write(updates, session=session)
                applied = [{"message_id": new_id()} for _ in range(size)]
                entries = [{"message_id": new_id(), "body": b"{}"} for _ in range(size)]
                record = {"_id": new_id(), "applied": applied, "entries": entries}
                await db["outbox"].insert_one(record, session=session)
            done += size
        return done / (time.perf_counter() - started)

    try:
        # Collections and indexes exist before any transaction; message ids applied once.
        await db["outbox"].create_index("applied.message_id", unique=True, sparse=True)
        await db["state"].insert_one({"_id": "first"})
        return DatabaseCeiling(await messages_per_second(1), await messages_per_second(batch), batch)
    finally:
        await client.drop_database(db.name)
        await client.close()


@asynccontextmanager
async def scratch_vhost(settings: Settings) -> AsyncIterator[Settings]:
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
async def scratch_database(settings: Settings, actors: Iterable[str]) -> AsyncIterator[Settings]:
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


@asynccontextmanager
async def running(host: ActorHost) -> AsyncIterator[ActorHost]:
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[RabbitBroker]:
    broker = make_broker(settings, app_name=BENCH_APP, role="publisher")
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.stop()


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
