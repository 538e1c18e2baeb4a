"""`emporium bench saga`: what it places, and the figures and tables it prints (pure)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from rich.table import Table

from brokers.contracts.common import Line
from brokers.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderStatus,
    OrderView,
    PlaceOrder,
)
from ops.bench.common import (
    percentile,
)

K = TypeVar("K")
# Any tuple of names: a mapping's key type is invariant, so tuple[str, ...] would refuse pairs.
Key = TypeVar("Key", bound=tuple[str, ...])
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


# An order's statuses on the happy path, in order: the saga's legs lie between them.
HAPPY_PATH: tuple[OrderStatus, ...] = ("placed", "reserved", "confirmed", "shipped", "delivered")


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


def _by(counts: Mapping[Key, int], position: int) -> Counter[str]:
    """Counts keyed by tuples, added up by the tuple's element at ``position``."""
    summed: Counter[str] = Counter()
    for key, count in counts.items():
        summed[key[position]] += count
    return summed


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far by this process (every actor of the run, and the simulated payment
    provider) and by the whole machine (None where /proc/stat cannot be read), which has ``cores``."""

    process_s: float = 0.0
    machine_s: float | None = None
    cores: int = 1

    def since(self, earlier: Cpu) -> Cpu:
        machine = None
        if self.machine_s is not None and earlier.machine_s is not None:
            machine = self.machine_s - earlier.machine_s
        return Cpu(self.process_s - earlier.process_s, machine, self.cores)

    @property
    def rest_s(self) -> float | None:
        """The machine's CPU seconds not used by this process (MongoDB's, RabbitMQ's, ...)."""
        return None if self.machine_s is None else max(self.machine_s - self.process_s, 0.0)


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
    # The runtime's group commit, by actor: its histograms' counts and sums (see Batching)
    batching: Mapping[str, Batching] = field(default_factory=dict)
    # MongoDB documents written (insert, update and delete statements): (actor, collection, command)
    mongo_documents: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # Left out of comparisons: it grows while everything else stays quiet (see Quiet).
    cpu: Cpu = field(default_factory=Cpu, compare=False)

    def since(self, earlier: Counts) -> Counts:
        return Counts(
            self.published - earlier.published,
            self.delivered - earlier.delivered,
            self.parked - earlier.parked,
            _grown(self.published_to, earlier.published_to),
            _grown(self.taken, earlier.taken),
            _grown(self.mongo_commands, earlier.mongo_commands),
            {
                actor: now.since(earlier.batching.get(actor, Batching()))
                for actor, now in self.batching.items()
            },
            _grown(self.mongo_documents, earlier.mongo_documents),
            self.cpu.since(earlier.cpu),
        )


@dataclass(frozen=True)
class Batching:
    """One actor's group commit as its metrics count it: transactions committed, the messages they
    applied and the seconds they took; messages applied and their seconds from delivery to published."""

    transactions: int = 0
    messages: float = 0.0
    transaction_s: float = 0.0
    handled: int = 0
    handled_s: float = 0.0

    def since(self, earlier: Batching) -> Batching:
        return Batching(
            self.transactions - earlier.transactions,
            self.messages - earlier.messages,
            self.transaction_s - earlier.transaction_s,
            self.handled - earlier.handled,
            self.handled_s - earlier.handled_s,
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
    # Where the time goes: each leg of the happy path ("placed → reserved", ...), its spans.
    legs_s: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, views: Sequence[OrderView], seconds: float, cost: Counts) -> SagaFigures:
        statuses = Counter(view.status for view in views)

        def spans(start: OrderStatus, end: OrderStatus) -> tuple[float, ...]:
            found = (step_seconds(view, start, end) for view in views)
            return tuple(span for span in found if span is not None)

        return cls(
            len(views),
            statuses["delivered"],
            statuses["cancelled"],
            seconds,
            cost,
            spans("placed", "confirmed"),
            spans("placed", "delivered"),
            {f"{start} → {end}": spans(start, end) for start, end in itertools.pairwise(HAPPY_PATH)},
        )

    def per_order(self, count: float) -> float:
        """A count (or seconds) shared out over the delivered orders."""
        if not self.delivered:
            raise ValueError("no order was delivered")
        return count / self.delivered

    @property
    def transactions(self) -> int:
        return _by(self.cost.mongo_commands, 1)["commitTransaction"]

    @property
    def cpu_ceiling(self) -> float | None:
        """Delivered orders/s the machine's cores would allow at this run's CPU per order, if the
        work spread over them perfectly (None where the machine's CPU is not known)."""
        machine = self.cost.cpu.machine_s
        if not machine or not self.delivered:
            return None
        return self.cost.cpu.cores / self.per_order(machine)

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON for scripts (``bench saga --json``): counts in all and per delivered order."""
        cost = self.cost

        def latency(spans: Sequence[float]) -> dict[str, float] | None:
            if not spans:
                return None
            return {"p50_ms": percentile(spans, 0.50) * 1000, "p99_ms": percentile(spans, 0.99) * 1000}

        totals = {
            "messages_published": cost.published,
            "messages_delivered": cost.delivered,
            "events_no_actor_takes": cost.parked,
            "messages_taken": sum(cost.taken.values()),
            "mongodb_round_trips": sum(cost.mongo_commands.values()),
            "mongodb_transactions": self.transactions,
            "mongodb_documents_written": sum(cost.mongo_documents.values()),
        }
        cpu = cost.cpu
        return {
            "orders": {"placed": self.placed, "delivered": self.delivered, "cancelled": self.cancelled},
            "seconds": self.seconds,
            "delivered_orders_per_s": self.delivered / self.seconds,
            "placed_to_confirmed": latency(self.to_confirmed_s),
            "placed_to_delivered": latency(self.to_delivered_s),
            "legs": {leg: latency(spans) for leg, spans in self.legs_s.items()},
            "totals": totals,
            "per_delivered_order": {name: self.per_order(total) for name, total in totals.items()},
            "mongodb_round_trips_by_actor": dict(_by(cost.mongo_commands, 0)),
            "mongodb_round_trips_by_command": dict(_by(cost.mongo_commands, 1)),
            "mongodb_documents_written_by_actor": dict(_by(cost.mongo_documents, 0)),
            "cpu": {
                "cores": cpu.cores,
                "this_process_ms_per_order": self.per_order(cpu.process_s) * 1000,
                "rest_of_machine_ms_per_order": None
                if cpu.rest_s is None
                else self.per_order(cpu.rest_s) * 1000,
                "ceiling_delivered_orders_per_s": self.cpu_ceiling,
            },
        }


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
    for leg, spans in figures.legs_s.items():
        table.add_row(f"  {leg}", _ms(spans))
    if (ceiling := figures.cpu_ceiling) is not None and figures.cost.cpu.machine_s is not None:
        per_order_ms = figures.per_order(figures.cost.cpu.machine_s) * 1000
        table.add_row(
            "CPU ceiling (whole machine)",
            f"{figures.cost.cpu.cores} cores / {per_order_ms:,.0f} ms per order = {ceiling:.0f} orders/s",
        )
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
    written = sum(cost.mongo_documents.values())
    table.add_row(
        "MongoDB documents written",
        f"{written:,}",
        f"{figures.per_order(written):.1f}",
        "insert/update/delete statements",
    )
    cpu = cost.cpu
    for measure, seconds, source in (
        ("CPU ms, this process (actors, provider)", cpu.process_s, "time.process_time"),
        ("CPU ms, rest of the machine", cpu.rest_s, "/proc/stat, less this process"),
    ):
        if seconds is not None:
            table.add_row(
                measure, f"{seconds * 1000:,.0f}", f"{figures.per_order(seconds) * 1000:.1f}", source
            )
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


def batching_table(figures: SagaFigures) -> Table:
    """Where each actor's time goes: how full its batches are, how long their transactions take, and
    how long a message waits from delivery until its batch is committed and published."""
    table = Table(title="group commit, by actor")
    for header in ("actor", "transactions", "messages per transaction", "ms per transaction"):
        table.add_column(header, justify="left" if header == "actor" else "right", no_wrap=True)
    table.add_column("ms delivery → published", justify="right")
    for actor, b in sorted(figures.cost.batching.items()):
        if not b.transactions:
            continue
        table.add_row(
            actor,
            f"{b.transactions:,}",
            f"{b.messages / b.transactions:.1f}",
            f"{b.transaction_s / b.transactions * 1000:.0f}",
            f"{b.handled_s / b.handled * 1000:.0f}" if b.handled else "-",
        )
    return table


def breakdowns(figures: SagaFigures, *, top_commands: int = 8, top_documents: int = 12) -> list[Table]:
    """Messages published by exchange and taken by type; MongoDB commands by actor and by name, and
    the documents they wrote by actor and collection."""
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
        breakdown_table(
            figures,
            "messages published, by exchange",
            ["exchange"],
            (((name,), count) for name, count in cost.published_to.items()),
        ),
        breakdown_table(
            figures,
            "messages taken by actors, by type",
            ["type → actors"],
            (
                ((f"{type_} → {', '.join(sorted(takers[type_]))}",), count)
                for type_, count in _by(cost.taken, 1).items()
            ),
        ),
        breakdown_table(
            figures,
            "MongoDB commands, by actor",
            ["actor", "messages taken", "per message"],
            (actor_row(actor, count) for actor, count in _by(cost.mongo_commands, 0).items()),
        ),
        breakdown_table(
            figures,
            f"MongoDB commands, top {top_commands} by name",
            ["command"],
            (((name,), count) for name, count in commands.most_common(top_commands)),
        ),
        breakdown_table(
            figures,
            f"MongoDB documents written, top {top_documents}",
            ["actor", "collection", "by"],
            sorted(cost.mongo_documents.items(), key=lambda item: -item[1])[:top_documents],
        ),
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
        "Events no actor subscribes to are parked in unrouted-events (kept a day): here shipment.scheduled, "
        "stock.committed and notification.sent (3 per order) are, because the bench runs no edge; in the "
        "system the edge takes every event that names an order for its customers' live saga stream.\n"
        "MongoDB: every command the actors' client started (one round trip each; a transaction's commit or "
        "abort is one, sent to the admin database), from just before the first order until the system was "
        "quiet again (notifications and analytics included); documents written: the statements of inserts, "
        "updates and deletes (the embedded MongoDB's cost grows with them, not only with commands). An abort is a handler that failed (retried "
        "later) or lost a write conflict to a concurrent one (run again at once).\n"
        "not in these figures: each order's deadline timer coming back (the deadline is set past the run) "
        "and the outbox sweeper's periodic reads (also set past the run: they depend on time, not orders).\n"
        "latency: from each order's history in the orders read model (its steps' times).\n"
        "CPU: over the same span; the ceiling is the machine's cores shared out at the run's CPU per order, "
        "as if the work spread over them perfectly."
    )
