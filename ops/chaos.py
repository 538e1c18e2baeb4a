"""`emporium chaos`: the system as separate supervised processes, a load through the edge, one fault
per scenario, and then the books: what the edge accepted against what the system did with it.

Every run has servers of its own (ops/servers.py: a RabbitMQ node and an embedded MongoDB on free
ports), since faults restart and kill them, and one fleet on them: one process per actor, two
replicas of orders and of inventory (competing consumers), the edge and the payment-provider
simulator. A supervisor restarts any process that dies, as a container runtime would. The fleet
lives through the scenarios one after the other, as a deployed system lives through its faults;
each scenario places a load of its own (its own customers and SKUs) and injects one fault.

After the load and the fault, the run waits for the system to drain (no message waiting anywhere)
and then counts, per scenario: orders the edge accepted but the system lost, orders charged twice
(on the provider's own ledger), oversold SKUs, orders shipped after their cancel, orders cancelled
by timeout, the share confirmed, and what the checker finds that earlier scenarios had not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import structlog
from rich.table import Table

from actors.orders.handlers import NAME as ORDERS
from actors.registry import ACTORS
from brokers.contracts.orders import GetOrder, OrderView
from brokers.factory import named_url
from brokers.management import management_client, with_vhost
from brokers.rpc import QueryFailed, requesting
from brokers.settings import Settings
from brokers.topology import COMMANDS, EVENTS, MOVES, UNROUTED_EVENTS, delay_queue_name
from ops.invariants import (
    CAPTURED_TWICE,
    EVERY_ORDER_SETTLES,
    NO_DEAD_LETTER,
    SHIPPED_AND_CANCELLED,
    STOCK_RULES,
    TERMINAL,
    Report,
    check,
)
from ops.load import LoadConfig, run_load
from ops.servers import EmbeddedMongo, RabbitNode, free_port

log = structlog.get_logger()

REPLICAS = {"orders": 2, "inventory": 2}
READY_TIMEOUT_S = 60.0
RESTART_PAUSE_S = 0.5
COPY_HEADER = "x-emporium-chaos-copy"
# The run's own connections (the event duplicator, the order queries), by this name in the RabbitMQ UI.
APP_NAME = "emporium-chaos"
QUIET_S = 3.0  # three refreshes of the node's queue counts (ops/servers.py): nothing moved in between


class ChaosError(RuntimeError):
    """The run itself failed (a server or process would not start, the system never drained)."""


# --- the fleet -----------------------------------------------------------------------------------


@dataclass
class Member:
    """One supervised process: an actor replica, the edge, or the payment-provider simulator."""

    name: str
    role: str  # "actor", "edge" or "payment-provider": the ops sub-command it runs
    arguments: list[str]
    port: int
    process: asyncio.subprocess.Process | None = None
    # Where it runs (``python -m ops`` imports the code there first): another checkout, to compare.
    cwd: Path | None = None
    restarts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    """Processes started with one environment, restarted by the supervisor when they die."""

    environment: dict[str, str]
    logs: Path
    members: list[Member] = field(default_factory=list)
    _supervising: asyncio.Task[None] | None = None
    _stopping: bool = False

    def add(self, name: str, role: str, *arguments: str, cwd: Path | None = None) -> Member:
        port = free_port()
        command = [sys.executable, "-m", "ops", role, *arguments, "--host", "127.0.0.1", "--port", str(port)]
        member = Member(name, role, command, port, cwd=cwd)
        self.members.append(member)
        return member

    async def _spawn(self, member: Member) -> None:
        log_file = (self.logs / f"{member.name}.log").open("ab")
        member.process = await asyncio.create_subprocess_exec(
            *member.arguments,
            env={**os.environ, **self.environment},
            stdout=log_file,
            stderr=log_file,
            cwd=member.cwd,
            start_new_session=True,
        )
        log_file.close()  # the child holds its own copy

    async def start(self) -> None:
        for member in self.members:
            await self._spawn(member)
        await asyncio.gather(*(self.ready(member) for member in self.members))
        self._supervising = asyncio.create_task(self._supervise())

    async def ready(self, member: Member, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{member.base_url}/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise ChaosError(
            f"{member.name} was not ready within {timeout_s:.0f}s (log: {self.logs / member.name}.log)"
        )

    async def _supervise(self) -> None:
        """Restart what died, as Kubernetes or compose would."""
        while not self._stopping:
            for member in self.members:
                if (
                    member.process is not None
                    and member.process.returncode is not None
                    and not self._stopping
                ):
                    log.info("chaos.restart", member=member.name, exit=member.process.returncode)
                    await asyncio.sleep(RESTART_PAUSE_S)
                    member.restarts += 1
                    await self._spawn(member)
            await asyncio.sleep(0.2)

    def kill(self, member: Member) -> None:
        """kill -9 of one process (by its PID, never by name)."""
        if member.process is not None and member.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.process.pid, signal.SIGKILL)

    async def retire(self, member: Member) -> None:
        """Stop one process for good (SIGTERM, then wait): the supervisor no longer restarts it."""
        self.members.remove(member)
        if member.process is not None and member.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.process.pid, signal.SIGTERM)
            await member.process.wait()

    def actors(self) -> list[Member]:
        return [m for m in self.members if m.role == "actor"]

    async def stop(self) -> None:
        self._stopping = True
        if self._supervising is not None:
            self._supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervising
        for member in self.members:
            if member.process is not None and member.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.process.pid, signal.SIGTERM)
        for member in self.members:
            if member.process is not None:
                try:
                    await asyncio.wait_for(member.process.wait(), 20)
                except TimeoutError:
                    self.kill(member)
                    await member.process.wait()


def build_fleet(environment: dict[str, str], logs: Path) -> tuple[Fleet, Member, Member]:
    """Every actor (two replicas of orders and inventory), the edge and the provider simulator."""
    fleet = Fleet(environment, logs)
    provider = fleet.add("payment-provider", "payment-provider")
    for name in ACTORS:
        for replica in range(REPLICAS.get(name, 1)):
            fleet.add(f"{name}-{replica + 1}", "actor", name)
    edge = fleet.add("edge", "edge")
    return fleet, edge, provider


# --- faults --------------------------------------------------------------------------------------

# Coroutines, not any awaitable: run_scenario runs the fault as a task beside the load.
Fault = Callable[["Run"], Coroutine[Any, Any, None]]


async def no_fault(run: Run) -> None:
    await run.load_done.wait()


async def duplicate_every_message(run: Run) -> None:
    """Every message published to the events, commands and moves exchanges is published once more,
    with the same message id and properties, as a broker redelivery or a publisher retry would."""
    connection = await aio_pika.connect(named_url(run.amqp_url, APP_NAME, "duplicator"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        exchanges = {
            name: await channel.get_exchange(name) for name in (EVENTS.name, COMMANDS.name, MOVES.name)
        }
        for name in exchanges:
            await queue.bind(name, routing_key="#")

        async def copy(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if (message.headers or {}).get(COPY_HEADER) or message.exchange not in exchanges:
                    return
                copied = aio_pika.Message(
                    message.body,
                    headers={**(message.headers or {}), COPY_HEADER: 1},
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    type=message.type,
                    timestamp=message.timestamp,
                )
                await exchanges[message.exchange].publish(copied, routing_key=message.routing_key or "")
                run.counts["copies"] += 1

        await queue.consume(copy)
        await run.load_done.wait()


def kill_actors_every(seconds: float) -> Fault:
    async def kill_actors(run: Run) -> None:
        victims = run.fleet.actors()
        while not run.load_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.load_done.wait(), seconds)
            if not run.load_done.is_set():
                victim = run.random.choice(victims)
                run.fleet.kill(victim)
                run.counts[f"killed {victim.name}"] += 1

    return kill_actors


async def restart_rabbitmq(run: Run) -> None:
    await run.settled_in(2.0)
    await asyncio.to_thread(run.servers.node.restart_app)
    run.counts["rabbitmq restarts"] += 1
    await run.load_done.wait()


async def restart_mongodb(run: Run) -> None:
    await run.settled_in(2.0)
    await asyncio.to_thread(run.servers.mongo.kill)
    await asyncio.to_thread(run.servers.mongo.start)
    run.counts["mongodb restarts"] += 1
    await run.load_done.wait()


async def flaky_provider(run: Run) -> None:
    await run.provider_control({"error_rate": 0.5})
    run.counts["provider failing 50%"] += 1
    await run.load_done.wait()
    await run.provider_control({"error_rate": 0.0})


async def provider_down_for(run: Run, seconds: float = 10.0) -> None:
    await run.settled_in(1.0)
    await run.provider_control({"error_rate": 1.0})
    run.counts[f"provider down {seconds:.0f}s"] += 1
    await asyncio.sleep(seconds)  # the outage itself lasts this long: it is the fault, not a wait
    await run.provider_control({"error_rate": 0.0})
    await run.load_done.wait()


async def kill_the_edge(run: Run) -> None:
    await run.settled_in(2.0)
    run.fleet.kill(run.edge)
    run.counts["edge kills"] += 1
    await run.load_done.wait()


async def kill_a_cluster_node(run: Run, down_s: float = 5.0) -> None:
    """Two more nodes join the run's node (every quorum queue gets a replica on each, leaders spread
    over the three), then one of them is killed (kill -9) under the load and started again: the
    leaders it had move to the others, the queues keep serving, the clients (on the first node) go on."""
    node = run.servers.node
    peers = await run.servers.clustered()
    await asyncio.to_thread(node.ctl, "rebalance", "quorum", tool="rabbitmq-queues")
    await run.settled_in(2.0)
    victim = run.random.choice(peers)
    # Shown, not assumed: how many queues the kill takes a leader from, and that each has 3 replicas.
    queues = await asyncio.to_thread(node.quorum_queues, run.vhost)
    run.counts["quorum queues led by the killed node"] += sum(q.leader == victim.node for q in queues)
    run.counts["quorum queues with fewer than 3 replicas"] += sum(len(q.members) < 3 for q in queues)
    await asyncio.to_thread(victim.kill)
    run.counts["cluster node kills"] += 1
    await asyncio.sleep(down_s)  # the node stays down this long: it is the fault, not a wait
    await asyncio.to_thread(victim.start)
    await run.load_done.wait()


SCENARIOS: dict[str, Fault] = {
    "baseline": no_fault,
    "duplicates": duplicate_every_message,
    "kill-actors": kill_actors_every(3.0),
    "rabbitmq-restart": restart_rabbitmq,
    "mongodb-restart": restart_mongodb,
    "provider-flaky": flaky_provider,
    "provider-down-10s": provider_down_for,
    "edge-kill": kill_the_edge,
    # Last: from here on the run's RabbitMQ is a cluster of three.
    "rabbitmq-cluster-node-kill": kill_a_cluster_node,
}


# --- one scenario ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What a fault sees of the scenario it runs in."""

    name: str
    servers: Servers
    vhost: str
    fleet: Fleet
    edge: Member
    provider: Member
    amqp_url: str
    random: random.Random
    load_done: asyncio.Event = field(default_factory=asyncio.Event)
    counts: Counter[str] = field(default_factory=Counter)

    async def settled_in(self, seconds: float) -> None:
        """Let the load get going before the fault (or end early if the load already ended)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.load_done.wait(), seconds)

    async def provider_control(self, change: dict[str, Any]) -> None:
        """Change some of the simulator's behaviour, keeping the rest (the load's declined cards)."""
        async with httpx.AsyncClient(base_url=self.provider.base_url, timeout=5.0) as http:
            current = (await http.get("/control")).raise_for_status().json()
            (await http.put("/control", json={**current, **change})).raise_for_status()


def run_settings(base: Settings, node: RabbitNode, mongo: EmbeddedMongo, vhost: str, tag: str) -> Settings:
    return base.model_copy(
        update={
            "rabbitmq_url": with_vhost(node.amqp_url, vhost),
            "rabbitmq_management_url": node.management_url,
            "mongodb_url": mongo.url,
            "emporium_db_prefix": f"chaos{tag}",
        }
    )


def fleet_environment(
    settings: Settings, provider_port: int, *, deadline_ms: int, carrier_step_ms: int
) -> dict[str, str]:
    return {
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url,
        "MONGODB_URL": settings.mongodb_url,
        "EMPORIUM_DB_PREFIX": settings.emporium_db_prefix,
        "EMPORIUM_ENV": "development",
        "EMPORIUM_PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{provider_port}",
        "EMPORIUM_ORDER_DEADLINE_MS": str(deadline_ms),
        "EMPORIUM_CARRIER_STEP_MS": str(carrier_step_ms),
        "EMPORIUM_RATE_LIMIT": "100000/minute",
        "EMPORIUM_LOGIN_RATE_LIMIT": "100000/minute",
        "EMPORIUM_LOG_LEVEL": "WARNING",
    }


@contextlib.asynccontextmanager
async def run_vhost(node: RabbitNode, vhost: str) -> AsyncIterator[None]:
    settings = Settings(rabbitmq_management_url=node.management_url)
    async with management_client(settings) as management:
        (await management.put(f"/api/vhosts/{quote(vhost, safe='')}")).raise_for_status()
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        (
            await management.put(f"/api/permissions/{quote(vhost, safe='')}/guest", json=permissions)
        ).raise_for_status()
        yield


async def queue_depths(settings: Settings, vhost: str) -> dict[str, int]:
    """Messages in every queue of the vhost (ready and unacknowledged)."""
    async with management_client(settings) as management:
        response = await management.get(
            f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name,messages"}
        )
        response.raise_for_status()
        return {queue["name"]: queue.get("messages") or 0 for queue in response.json()}


def parked(name: str) -> bool:
    """Queues whose messages wait for an operator rather than for the system."""
    return name.endswith(".dlq") or name == UNROUTED_EVENTS.name


async def drain(
    settings: Settings, vhost: str, accepted: Sequence[str], *, timers: Collection[str], timeout_s: float
) -> tuple[dict[str, int], dict[str, OrderView | None]]:
    """Wait until no message waits for the system (parked ones aside) for a few readings in a row and
    every accepted order has ended; the depths and the orders then. The management API refreshes its
    counts every second or so, hence the quiet period rather than one empty reading.

    The ``timers`` queues (orders' deadlines) keep one message per order until its deadline: once
    every order has ended they wait for nothing. While one has not, the run waits on, its deadline
    included, and after ``timeout_s`` the books count it lost."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while True:
        depths = await queue_depths(settings, vhost)
        busy = {name: n for name, n in depths.items() if n and not parked(name) and name not in timers}
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET_S or now > deadline:
            views = await _views(settings, accepted)
            if now > deadline or all(view is not None and view.status in TERMINAL for view in views.values()):
                return depths, views
        if now > deadline and busy:
            raise ChaosError(f"the system did not drain within {timeout_s:.0f}s: {busy}")
        await asyncio.sleep(0.5)


# --- the books -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    scenario: str
    accepted: int
    lost: int
    double_charged: int
    oversold: int
    shipped_after_cancel: int
    timed_out: int
    confirmed: int
    dead_letters: int
    violations: tuple[str, ...]
    faults: str
    # The orders behind a lost, timed-out or shipped-after-cancel count, with their histories.
    unclean_orders: tuple[str, ...] = ()
    took_s: float = 0.0  # the scenario from its first order to its books
    outcomes: tuple[tuple[str, int], ...] = ()  # how the accepted orders ended, most common first

    @property
    def confirmed_pct(self) -> float:
        return 100.0 * self.confirmed / self.accepted if self.accepted else 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.double_charged
            or self.oversold
            or self.shipped_after_cancel
            or self.timed_out
            or self.dead_letters
            or self.violations
        )


def shipped_and_cancelled(view: OrderView) -> bool:
    statuses = {step.status for step in view.history}
    return "cancelled" in statuses and bool(statuses & {"shipped", "delivered"})


COLUMNS = (
    "scenario",
    "accepted",
    "lost",
    "double-charged",
    "oversold",
    "shipped after cancel",
    "timed out",
    "confirmed %",
    "dead letters",
    "other violations",
    "faults injected",
    "took s",
)


def row_cells(row: Row) -> list[str]:
    return [
        row.scenario,
        str(row.accepted),
        str(row.lost),
        str(row.double_charged),
        str(row.oversold),
        str(row.shipped_after_cancel),
        str(row.timed_out),
        f"{row.confirmed_pct:.1f}",
        str(row.dead_letters),
        str(len(row.violations)),
        row.faults or "-",
        f"{row.took_s:.0f}",
    ]


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


async def _views(settings: Settings, order_ids: Sequence[str]) -> dict[str, OrderView | None]:
    async with requesting(settings, app_name=APP_NAME) as requester:

        async def view(order_id: str) -> OrderView | None:
            try:
                return await requester.ask(GetOrder(order_id=order_id), OrderView)
            except QueryFailed as exc:
                if exc.problem.status == 404:
                    return None
                raise

        found = await asyncio.gather(*(view(order_id) for order_id in order_ids))
    return dict(zip(order_ids, found, strict=True))


@dataclass
class Books:
    """What earlier scenarios of the run already reported, so that each row counts only its own."""

    reported: set[tuple[str, str]] = field(default_factory=set)
    dead_letters: int = 0

    def book(
        self,
        scenario: str,
        accepted: Sequence[str],
        views: dict[str, OrderView | None],
        report: Report,
        depths: dict[str, int],
        faults: Counter[str],
    ) -> Row:
        """The scenario's row: the edge's ledger (its accepted orders) against what the system holds,
        and the checker's new findings (the provider's ledger among them) in the columns they belong to."""
        fresh = [v for v in report.violations if (v.invariant, v.subject) not in self.reported]
        self.reported |= {(v.invariant, v.subject) for v in fresh}
        dead_letters = sum(n for name, n in depths.items() if name.endswith(".dlq"))
        new_dead_letters, self.dead_letters = dead_letters - self.dead_letters, dead_letters
        known = [view for view in views.values() if view is not None]

        def subjects(*invariants: str) -> set[str]:
            return {v.subject for v in fresh if v.invariant in invariants}

        counted = {CAPTURED_TWICE, SHIPPED_AND_CANCELLED, NO_DEAD_LETTER, EVERY_ORDER_SETTLES, *STOCK_RULES}
        unclean = [
            story(order_id, view)
            for order_id, view in views.items()
            if view is None
            or view.status not in TERMINAL
            or view.cancel_reason == "timeout"
            or shipped_and_cancelled(view)
        ]
        return Row(
            scenario=scenario,
            accepted=len(accepted),
            lost=sum(1 for view in views.values() if view is None or view.status not in TERMINAL),
            double_charged=len(subjects(CAPTURED_TWICE)),
            oversold=len(subjects(*STOCK_RULES)),
            shipped_after_cancel=len(
                subjects(SHIPPED_AND_CANCELLED)
                | {view.order_id for view in known if shipped_and_cancelled(view)}
            ),
            timed_out=sum(1 for view in known if view.cancel_reason == "timeout"),
            confirmed=sum(1 for view in known if any(step.status == "confirmed" for step in view.history)),
            dead_letters=new_dead_letters,
            violations=tuple(
                f"{v.invariant}: {v.subject}: {v.detail}" for v in fresh if v.invariant not in counted
            ),
            faults=", ".join(f"{name} x{count}" for name, count in sorted(faults.items())),
            unclean_orders=tuple(unclean),
            outcomes=tuple(Counter(outcome(view) for view in views.values()).most_common()),
        )


def outcome(view: OrderView | None) -> str:
    if view is None:
        return "unknown"
    return f"{view.status}: {view.cancel_reason}" if view.cancel_reason else view.status


def story(order_id: str, view: OrderView | None) -> str:
    """One order as the report tells it: what orders holds, step by step."""
    if view is None:
        return f"{order_id}: unknown to orders"
    steps = ", ".join(
        f"{step.status}{f' ({step.reason})' if step.reason else ''} {step.at.strftime('%H:%M:%S.%f')[:-3]}"
        for step in view.history
    )
    return f"{order_id}: {view.status}; {steps}"


# --- a run ---------------------------------------------------------------------------------------

# Places the load through the edge at this URL (on the run's settings); the ids of the orders the
# edge accepted (answered 202).
Drive = Callable[[str, Settings], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class Timings:
    deadline_ms: int = 60_000
    carrier_step_ms: int = 300
    drain_timeout_s: float = 240.0


@dataclass
class System:
    """The run's system: servers, vhost, fleet and the settings to reach them."""

    servers: Servers
    vhost: str
    settings: Settings  # the provider's URL is the fleet's simulator
    fleet: Fleet
    edge: Member
    provider: Member


@contextlib.asynccontextmanager
async def started_system(base: Settings, directory: Path, timings: Timings) -> AsyncIterator[System]:
    """Servers of the run's own and one fleet on them, which lives through every scenario's fault:
    as a deployed system lives through one fault after the other."""
    tag = uuid.uuid4().hex[:8]
    vhost = f"chaos-{tag}"
    async with servers(directory) as started, run_vhost(started.node, vhost):
        settings = run_settings(base, started.node, started.mongo, vhost, tag).model_copy(
            update={"emporium_order_deadline_ms": timings.deadline_ms}
        )
        logs = directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fleet, edge, provider = build_fleet({}, logs)
        fleet.environment.update(
            fleet_environment(
                settings,
                provider.port,
                deadline_ms=timings.deadline_ms,
                carrier_step_ms=timings.carrier_step_ms,
            )
        )
        settings = settings.model_copy(update={"emporium_payment_provider_url": provider.base_url})
        await fleet.start()
        try:
            yield System(started, vhost, settings, fleet, edge, provider)
        finally:
            await fleet.stop()


async def run_scenario(
    name: str, fault: Fault, system: System, books: Books, *, drive: Drive, timings: Timings, seed: int
) -> Row:
    fleet, began = system.fleet, time.monotonic()
    restarts_before = {m.name: m.restarts for m in fleet.members}
    run = Run(
        name,
        system.servers,
        system.vhost,
        fleet,
        system.edge,
        system.provider,
        system.settings.rabbitmq_url,
        random.Random(seed),
    )
    faulting = asyncio.create_task(fault(run))
    try:
        accepted = await drive(system.edge.base_url, system.settings)
    finally:
        run.load_done.set()
        await faulting
    # Killed or not, every member must be back before the books are read and the next fault comes.
    await asyncio.gather(*(fleet.ready(member) for member in fleet.members))
    timers = {delay_queue_name(ORDERS, timings.deadline_ms)}
    depths, views = await drain(
        system.settings, system.vhost, accepted, timers=timers, timeout_s=timings.drain_timeout_s
    )
    report = await check(system.settings, drained=True)
    restarts = Counter(
        {
            f"restarted {m.name}": m.restarts - restarts_before[m.name]
            for m in fleet.members
            if m.restarts > restarts_before[m.name]
        }
    )
    row = books.book(name, accepted, views, report, depths, run.counts + restarts)
    return dataclasses.replace(row, took_s=time.monotonic() - began)


@dataclass
class Servers:
    """The run's own servers: a RabbitMQ node (the one every client uses), the peers that join it for
    the cluster scenario, and the embedded MongoDB."""

    directory: Path
    node: RabbitNode
    mongo: EmbeddedMongo
    peers: list[RabbitNode] = field(default_factory=list)

    async def clustered(self, size: int = 3) -> list[RabbitNode]:
        """Make the node one of a cluster of ``size`` (once): each peer joins and takes a replica of
        every quorum queue."""
        while len(self.peers) < size - 1:
            name = f"peer{len(self.peers) + 1}"
            peer = RabbitNode(f"{self.node.name}-{name}", self.directory / f"rabbitmq-{name}")
            self.peers.append(peer)
            await asyncio.to_thread(peer.start)
            await asyncio.to_thread(peer.join, self.node)
        return self.peers


@contextlib.asynccontextmanager
async def servers(directory: Path) -> AsyncIterator[Servers]:
    node = RabbitNode(f"emporium-chaos-{uuid.uuid4().hex[:6]}", directory / "rabbitmq")
    started = Servers(directory, node, EmbeddedMongo(directory / "mongodb"))
    try:
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(started.mongo.start)
        yield started
    finally:
        await asyncio.to_thread(started.mongo.stop)
        for peer in started.peers:
            await asyncio.to_thread(peer.stop)
        await asyncio.to_thread(node.stop)


async def run_chaos(
    scenarios: Sequence[str],
    *,
    base: Settings,
    drive: Drive,
    directory: Path,
    timings: Timings,
    seed: int = 1,
    on_row: Callable[[Row], None] = lambda row: None,
) -> list[Row]:
    rows, books = [], Books()
    async with started_system(base, directory, timings) as system:
        for number, name in enumerate(scenarios):
            row = await run_scenario(
                name, SCENARIOS[name], system, books, drive=drive, timings=timings, seed=seed + number
            )
            on_row(row)
            rows.append(row)
    return rows


def load_drive(config: LoadConfig) -> Drive:
    """The load generator as the scenarios' driver: the orders the edge answered 202."""

    async def drive(edge_url: str, settings: Settings) -> list[str]:
        result = await run_load(edge_url, config, settings=settings)
        return [
            record.order_id for record in result.orders if record.accepted_at is not None and record.order_id
        ]

    return drive


def rows_table(rows: Sequence[Row]) -> Table:
    table = Table(title="emporium chaos")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("scenario", "faults injected") else "right")
    for row in rows:
        table.add_row(*row_cells(row), style=None if row.clean else "red")
    return table


def report_markdown(rows: Sequence[Row], *, commit: str, orders: int, started: datetime) -> str:
    lines = [
        "# emporium chaos report",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on commit `{commit}`, {orders} orders offered per scenario.",
        "",
        markdown_table(rows),
    ]
    lines += ["## How the accepted orders ended", ""]
    lines += [
        f"- {row.scenario}: " + ", ".join(f"{name} {count}" for name, count in row.outcomes) for row in rows
    ]
    lines.append("")
    for row in rows:
        if row.violations:
            lines += [f"## {row.scenario}: other violations", ""] + [f"- {v}" for v in row.violations] + [""]
        if row.unclean_orders:
            lines += (
                [f"## {row.scenario}: orders not cleanly ended", ""]
                + [f"- {o}" for o in row.unclean_orders]
                + [""]
            )
    return "\n".join(lines)
