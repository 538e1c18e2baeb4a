"""`emporium bench edge`: POST /orders at the edge, next to a bare FastAPI app that answers 202 to the
same request on the same uvicorn (the edge's guarded h11 protocol), side by side in one run.

Each app runs in a process of its own, as deployed. The edge runs on a vhost and databases of the
run's own, with the actors placing an order involves up to its command: identity (tokens), catalog
(prices), inventory and orders (which the edge asked on every POST before it kept its price book;
they also take the PlaceOrders, so the edge shares the CPU with that part of the saga, as it would
deployed). The shop is set up through the edge: an administrator, one product with stock for every
order, customers logged in. The edge's limits are lifted for the run (``EDGE_ENVIRONMENT``): the
per-customer request budget and the saga's backlog bound (admission control, not what is measured).

Then each app takes the same requests, ``requests`` a round with ``in_flight`` at once, the apps in
turn for ``rounds`` rounds: accepted/s, latency, the ratio to the bare app (medians of the rounds),
and the questions the edge asked actors per POST (its queries, counted by a queue bound to the
queries exchange). ``--compare DIR`` adds an edge run from another checkout of emporium (say, one
before a change), against the same actors, in the same rounds.

A second table has the same rounds with inventory and orders stopped (identity and catalog still
run): what the edge itself costs beside the bare app, the saga's CPU aside. The PlaceOrders then wait
in the orders queue, which is deleted with the run. An edge that asks actors before it places an
order (``--compare``) cannot take part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import typer
import uvicorn
from fastapi import FastAPI
from rich.progress import Progress
from rich.table import Table

from brokers.contracts.inventory import GetStock
from brokers.contracts.orders import GetOrder, QuoteOrder
from brokers.logs import configure_logging
from brokers.settings import Settings, get_settings
from brokers.topology import QUERIES
from edge.server import server_config
from ops.bench.common import BenchmarkError, app, console, errors, percentile, scratch_database, scratch_vhost
from ops.chaos import ChaosError, Fleet, Member, parked, queue_depths
from ops.load import Customer, Edge, open_product, sign_in_admin, sign_up_customers

ACTORS_NEEDED = ("identity", "catalog", "inventory", "orders")
# Stopped for the second table: the actors that take the orders (identity still checks tokens).
SAGA_ACTORS = ("inventory", "orders")
# The questions POST /orders asked before the edge kept a price book: is the order known, are its
# SKUs, what does it cost.
QUESTIONS = (GetOrder.TYPE, GetStock.TYPE, QuoteOrder.TYPE)
EDGE_ENVIRONMENT = {
    "EMPORIUM_RATE_LIMIT": "1000000/minute",
    "EMPORIUM_LOGIN_RATE_LIMIT": "1000000/minute",
    "EMPORIUM_SAGA_BACKLOG_BOUND": "1000000",
    "EMPORIUM_LOG_LEVEL": "WARNING",
    "EMPORIUM_ENV": "development",
}
SKU = "BENCH-EDGE"
CUSTOMERS = 8
SETUP_S = 120.0
IDLE_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 30.0


# --- the bare app ----------------------------------------------------------------------------------


def bare_app() -> FastAPI:
    """What POST /orders is measured against: FastAPI reading the same JSON body, answering 202."""
    bare = FastAPI()

    @bare.post("/orders", status_code=202)
    async def place_order(body: dict[str, Any]) -> dict[str, str]:
        return {"status": "accepted", "order_id": uuid.uuid4().hex}

    @bare.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return bare


@app.command("bare-edge")
def bare_edge_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
) -> None:
    """Serve the bare FastAPI app `emporium bench edge` measures the edge against (it starts one)."""
    settings = get_settings()
    uvicorn.Server(server_config(bare_app(), settings, host=host, port=port, log_level="warning")).run()


# --- measuring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    app: str
    seconds: float
    latencies_s: list[float]
    answers: Counter[int]
    questions: int

    @property
    def accepted_per_s(self) -> float:
        return self.answers[202] / self.seconds


@dataclass(frozen=True)
class Target:
    name: str
    member: Member
    is_edge: bool


class QuestionCounter:
    """The queries actors are asked over the run's vhost, by type (a queue of its own on the exchange)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def counting(self, url: str) -> AsyncIterator[QuestionCounter]:
        connection = await aio_pika.connect_robust(url)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(QUERIES.name)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for question in QUESTIONS:
                await queue.bind(exchange, routing_key=question)
            await queue.consume(self._count, no_ack=True)
            yield self
        finally:
            await connection.close()

    async def _count(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.counts[message.type or ""] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def one_round(
    http: httpx.AsyncClient,
    target: Target,
    customers: Sequence[Customer],
    *,
    requests: int,
    in_flight: int,
    questions: QuestionCounter,
    progress: Progress,
) -> Round:
    body = {"lines": [{"sku": SKU, "quantity": 1}]}
    latencies: list[float] = []
    answers: Counter[int] = Counter()
    asked_before = questions.total
    task = progress.add_task(f"{target.name}: POST /orders", total=requests)
    numbers = iter(range(requests))

    async def worker() -> None:
        for n in numbers:
            customer = customers[n % len(customers)]
            headers = {**customer.headers, "Idempotency-Key": uuid.uuid4().hex}
            sent = time.perf_counter()
            response = await http.post(f"{target.member.base_url}/orders", json=body, headers=headers)
            latencies.append(time.perf_counter() - sent)
            answers[response.status_code] += 1
            progress.advance(task)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - started
    progress.remove_task(task)
    return Round(target.name, seconds, latencies, answers, questions.total - asked_before)


async def idle(settings: Settings, *, timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Wait until the actors have taken every message (delayed and parked ones aside) for two readings
    in a row: each round starts with the machine quiet, whatever the round before it left."""
    vhost = unquote(urlsplit(settings.rabbitmq_url).path.lstrip("/"))
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 2:
        depths = await queue_depths(settings, vhost)
        busy = {name: n for name, n in depths.items() if n and not parked(name) and ".delay." not in name}
        quiet = 0 if busy else quiet + 1
        if busy and time.monotonic() > deadline:
            raise BenchmarkError(f"the actors did not catch up within {timeout_s:.0f}s: {busy}")
        await asyncio.sleep(0.5)


async def set_up_shop(edge_url: str, settings: Settings, units: int) -> list[Customer]:
    deadline = time.monotonic() + SETUP_S
    run_id = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=edge_url, timeout=REQUEST_TIMEOUT_S) as http:
        edge = Edge(http)
        admin = await sign_in_admin(edge, settings, run_id, deadline)
        await open_product(edge, admin, SKU, "normal", units, deadline)
        return await sign_up_customers(edge, run_id, CUSTOMERS, deadline)


@contextlib.asynccontextmanager
async def started(fleet: Fleet) -> AsyncIterator[Fleet]:
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


@dataclass(frozen=True)
class EdgeFigures:
    with_saga: list[Round]
    edge_alone: list[Round]


async def bench_edge(
    settings: Settings, *, requests: int, in_flight: int, rounds: int, compare: Path | None, logs: Path
) -> EdgeFigures:
    async with (
        scratch_vhost(settings) as on_vhost,
        scratch_database(on_vhost, ACTORS_NEEDED) as scratch,
    ):
        environment = {
            "RABBITMQ_URL": scratch.rabbitmq_url,
            "RABBITMQ_MANAGEMENT_URL": scratch.rabbitmq_management_url,
            "MONGODB_URL": scratch.mongodb_url,
            "EMPORIUM_DB_PREFIX": scratch.emporium_db_prefix,
            **EDGE_ENVIRONMENT,
        }
        fleet = Fleet(environment, logs)
        actors = {name: fleet.add(name, "actor", name) for name in ACTORS_NEEDED}
        targets = [Target("bare", fleet.add("bare", "bench", "bare-edge"), is_edge=False)]
        targets.append(Target("edge", fleet.add("edge", "edge"), is_edge=True))
        if compare is not None:
            targets.append(
                Target(f"edge of {compare.name}", fleet.add("compared", "edge", cwd=compare), True)
            )
        async with started(fleet):
            units = requests * rounds * (sum(t.is_edge for t in targets) + 1)
            customers = await set_up_shop(targets[1].member.base_url, scratch, units)
            limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
            async with (
                QuestionCounter().counting(scratch.rabbitmq_url) as questions,
                httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http,
            ):

                async def take_turns(apps: Sequence[Target], *, wait_idle: bool) -> list[Round]:
                    runs: list[Round] = []
                    with Progress(console=errors, transient=True) as progress:
                        for _ in range(rounds):
                            for target in apps:
                                if wait_idle:
                                    await idle(scratch)
                                runs.append(
                                    await one_round(
                                        http,
                                        target,
                                        customers,
                                        requests=requests,
                                        in_flight=in_flight,
                                        questions=questions,
                                        progress=progress,
                                    )
                                )
                    return runs

                with_saga = await take_turns(targets, wait_idle=True)
                await idle(scratch)
                for name in SAGA_ACTORS:
                    await fleet.retire(actors[name])
                return EdgeFigures(with_saga, await take_turns(targets[:2], wait_idle=False))


def summary(runs: Sequence[Round]) -> list[dict[str, Any]]:
    """One row per app, in the order they ran: medians of its rounds, its ratio to the first (bare)."""
    by_app: dict[str, list[Round]] = {}
    for run in runs:
        by_app.setdefault(run.app, []).append(run)
    bare = statistics.median(r.accepted_per_s for r in next(iter(by_app.values())))
    rows = []
    for name, rounds in by_app.items():
        rate = statistics.median(r.accepted_per_s for r in rounds)
        latencies = [s for r in rounds for s in r.latencies_s]
        rows.append(
            {
                "app": name,
                "rounds": len(rounds),
                "accepted_per_s": rate,
                "vs_bare": rate / bare if bare else None,
                "p50_ms": percentile(latencies, 0.5) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "questions_per_post": sum(r.questions for r in rounds) / len(latencies),
                "not_202": sum(n for r in rounds for status, n in r.answers.items() if status != 202),
            }
        )
    return rows


def edge_table(runs: Sequence[Round], *, title: str) -> Table:
    table = Table(title=f"{title} (medians of {_rounds(runs)} rounds)")
    for column in ("app", "accepted/s", "vs bare", "p50 ms", "p99 ms", "questions/POST", "not 202"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in summary(runs):
        table.add_row(
            row["app"],
            f"{row['accepted_per_s']:.0f}",
            "-" if row["vs_bare"] is None else f"{row['vs_bare']:.2f}x",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['questions_per_post']:.2f}",
            str(row["not_202"]),
        )
    return table


def _rounds(runs: Sequence[Round]) -> int:
    return max(Counter(r.app for r in runs).values())


@app.command("edge")
def edge_command(
    requests: Annotated[int, typer.Option(min=10, max=100_000, help="POSTs per app per round.")] = 600,
    in_flight: Annotated[int, typer.Option(min=1, max=256, help="POSTs in flight at once.")] = 16,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds; the apps take turns.")] = 2,
    compare: Annotated[
        Path | None,
        typer.Option(help="Another checkout of emporium whose edge joins the run (e.g. before a change)."),
    ] = None,
    logs: Annotated[Path, typer.Option(help="Where the run's processes write their logs.")] = Path(
        "bench-edge-logs"
    ),
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON (progress and errors on stderr).")
    ] = False,
) -> None:
    """POST /orders at the edge against a bare FastAPI app on the same uvicorn, side by side."""
    settings = get_settings()
    configure_logging("ERROR")
    logs.mkdir(parents=True, exist_ok=True)
    try:
        figures = asyncio.run(
            bench_edge(
                settings,
                requests=requests,
                in_flight=in_flight,
                rounds=rounds,
                compare=compare.resolve() if compare else None,
                logs=logs,
            )
        )
    except (BenchmarkError, ChaosError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if json_output:
        tables = {"with_saga": summary(figures.with_saga), "edge_alone": summary(figures.edge_alone)}
        typer.echo(json.dumps({"in_flight": in_flight, "requests_per_round": requests, **tables}, indent=2))
        return
    console.print(
        edge_table(
            figures.with_saga,
            title=f"POST /orders, {in_flight} in flight, the saga's actors taking the orders",
        )
    )
    console.print(
        edge_table(
            figures.edge_alone, title=f"POST /orders, {in_flight} in flight, inventory and orders stopped"
        )
    )
