"""Analytics rules: what the order and payment events tell about each order, and the figures that
follow from it. Pure: no I/O.

Each order is kept as the facts its events told: its current status, lines, amounts and saga times.
Every figure is a sum over orders of what each one contributes (its status counts one order, its
lines add units and revenue per SKU, its saga duration one in its bucket, ...). A handler updates
one order's facts and adds to the counters the difference between what the order contributed before
and after. So:
- a figure is read from its counter, never recomputed over all orders;
- a copy of an event (published again under another message id) changes no fact and adds nothing;
- events arriving out of order end in the same figures: a status only moves forward (cancelled is
  final), amounts are set rather than added, and each saga step keeps its earliest time.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import singledispatch
from itertools import accumulate
from typing import get_args

from brokers.contracts.analytics import Percentiles, Stats, TopProduct
from brokers.contracts.orders import (
    CancelReason,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderPlaced,
    OrderShipped,
)
from brokers.contracts.payments import FailureReason, PaymentCaptured, PaymentFailed, PaymentRefunded
from brokers.envelope import Event

# How far along each status is; an order is counted in the furthest one its events reached.
PROGRESS: dict[str, int] = {"placed": 0, "confirmed": 1, "shipped": 2, "delivered": 3, "cancelled": 4}
SOLD = frozenset({"confirmed", "shipped", "delivered"})
CANCEL_REASONS: tuple[str, ...] = get_args(CancelReason)
FAILURE_REASONS: tuple[str, ...] = get_args(FailureReason)
PERCENTILES = (50, 90, 99)

# Counters are named (kind, key): ("status", "confirmed"), ("units", "LAMP-1"), ("saga_ms", "2000"), ...
STATUS, REASON, MONEY, SALES, FAILURE, UNITS, REVENUE, SAGA = (
    "status",
    "reason",
    "money",
    "sales",
    "failure",
    "units",
    "revenue",
    "saga_ms",
)
Key = tuple[str, str]


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class OrderFacts:
    order_id: str
    status: str | None = None
    cancel_reason: str | None = None
    lines: tuple[Line, ...] | None = None
    total_cents: int | None = None
    placed_at: datetime | None = None
    confirmed_at: datetime | None = None
    captured_cents: int = 0
    refunded_cents: int = 0
    payment_failure: str | None = None
    # The stored version these facts were read at (0: none stored); the store checks it when writing.
    version: int = 0

    @property
    def saga_seconds(self) -> float | None:
        """Placed to confirmed; never negative, even if the two actors' clocks disagree."""
        if self.placed_at is None or self.confirmed_at is None:
            return None
        return max((self.confirmed_at - self.placed_at).total_seconds(), 0.0)


def contribution(facts: OrderFacts) -> Counter[Key]:
    """What one order adds to every counter."""
    counts: Counter[Key] = Counter()
    if facts.status is not None:
        counts[STATUS, facts.status] += 1
    if facts.status == "cancelled" and facts.cancel_reason is not None:
        counts[REASON, facts.cancel_reason] += 1
    if facts.payment_failure is not None:
        counts[FAILURE, facts.payment_failure] += 1
    if facts.saga_seconds is not None:
        counts[SAGA, str(saga_bucket_ms(facts.saga_seconds))] += 1
    counts[MONEY, "captured_cents"] += facts.captured_cents
    counts[MONEY, "refunded_cents"] += facts.refunded_cents
    if facts.status in SOLD and facts.lines is not None and facts.total_cents is not None:
        counts[SALES, "orders"] += 1
        counts[SALES, "total_cents"] += facts.total_cents
        for line in facts.lines:
            counts[UNITS, line.sku] += line.quantity
            counts[REVENUE, line.sku] += line.quantity * line.unit_price_cents
    return counts


def difference(before: OrderFacts, after: OrderFacts) -> dict[Key, int]:
    """What changing one order's facts from ``before`` to ``after`` adds to each counter (no zeros)."""
    was, now = contribution(before), contribution(after)
    return {key: now[key] - was[key] for key in sorted(was.keys() | now.keys()) if now[key] != was[key]}


def _advanced(facts: OrderFacts, status: str) -> OrderFacts:
    if facts.status is not None and PROGRESS[facts.status] >= PROGRESS[status]:
        return facts
    return replace(facts, status=status)


def _earliest(known: datetime | None, at: datetime) -> datetime:
    return at if known is None or at < known else known


def _with_lines(facts: OrderFacts, event: OrderPlaced | OrderConfirmed) -> OrderFacts:
    # Placed and confirmed carry the same lines; whichever arrives first tells them.
    if facts.lines is not None:
        return facts
    lines = tuple(Line(line.sku, line.quantity, line.unit_price_cents) for line in event.lines)
    return replace(facts, lines=lines, total_cents=event.total_cents)


@singledispatch
def observe(event: Event, facts: OrderFacts, at: datetime) -> OrderFacts:
    """The facts of an order once ``event`` (which happened at ``at``) is known."""
    raise TypeError(f"analytics does not follow {event.TYPE}")


@observe.register
def _(event: OrderPlaced, facts: OrderFacts, at: datetime) -> OrderFacts:
    facts = _with_lines(_advanced(facts, "placed"), event)
    return replace(facts, placed_at=_earliest(facts.placed_at, at))


@observe.register
def _(event: OrderConfirmed, facts: OrderFacts, at: datetime) -> OrderFacts:
    facts = _with_lines(_advanced(facts, "confirmed"), event)
    return replace(facts, confirmed_at=_earliest(facts.confirmed_at, at))


@observe.register
def _(event: OrderCancelled, facts: OrderFacts, at: datetime) -> OrderFacts:
    return replace(_advanced(facts, "cancelled"), cancel_reason=facts.cancel_reason or event.reason)


@observe.register
def _(event: OrderShipped, facts: OrderFacts, at: datetime) -> OrderFacts:
    return _advanced(facts, "shipped")


@observe.register
def _(event: OrderDelivered, facts: OrderFacts, at: datetime) -> OrderFacts:
    return _advanced(facts, "delivered")


@observe.register
def _(event: PaymentCaptured, facts: OrderFacts, at: datetime) -> OrderFacts:
    return replace(facts, captured_cents=event.amount_cents)


@observe.register
def _(event: PaymentRefunded, facts: OrderFacts, at: datetime) -> OrderFacts:
    return replace(facts, refunded_cents=event.amount_cents)


@observe.register
def _(event: PaymentFailed, facts: OrderFacts, at: datetime) -> OrderFacts:
    return replace(facts, payment_failure=facts.payment_failure or event.reason)


def average(total: int, count: int) -> int | None:
    """The mean in whole cents, halves rounded up; None without anything to average."""
    return (2 * total + count) // (2 * count) if count else None


def rank_index(percentile: int, count: int) -> int:
    """Where the nearest-rank percentile sits (0-based) among ``count`` values in ascending order."""
    return max(math.ceil(percentile / 100 * count), 1) - 1


def saga_bucket_ms(seconds: float) -> int:
    """A saga duration in milliseconds, kept to three significant digits (exact below one second).

    Durations are counted per bucket, so the percentiles come from counters, not from every order;
    buckets this fine make them exact to the millisecond or 0.5 %, whichever is coarser.
    """
    ms = round(seconds * 1000)
    step = 10 ** max(len(str(ms)) - 3, 0)
    return (ms + step // 2) // step * step


def percentiles(histogram: Mapping[str, int]) -> Percentiles:
    """p50/p90/p99 (nearest rank) of the durations counted per bucket (milliseconds, as text)."""
    buckets = sorted((int(ms), n) for ms, n in histogram.items() if n)
    if not buckets:
        return Percentiles(count=0)
    # How many durations lie in each bucket or below: the first bucket reaching a rank holds it.
    reached = list(accumulate(n for _, n in buckets))
    count = reached[-1]
    p50, p90, p99 = (buckets[bisect_left(reached, rank_index(p, count) + 1)][0] / 1000 for p in PERCENTILES)
    return Percentiles(count=count, p50_s=p50, p90_s=p90, p99_s=p99)


def top_products(units: Mapping[str, int], revenue: Mapping[str, int], top: int) -> list[TopProduct]:
    """The SKUs sold most: by units, then revenue, then SKU."""
    ranked = sorted((-n, -revenue.get(sku, 0), sku) for sku, n in units.items() if n > 0)
    return [TopProduct(sku=sku, units=-n, revenue_cents=-cents) for n, cents, sku in ranked[:top]]


def stats(counters: Mapping[str, Mapping[str, int]], *, as_of: datetime | None, top: int) -> Stats:
    """Every figure, from the counters; every status and reason is shown, zero or not."""

    def counted(kind: str) -> Mapping[str, int]:
        return counters.get(kind, {})

    captured, refunded = counted(MONEY).get("captured_cents", 0), counted(MONEY).get("refunded_cents", 0)
    sold, sold_cents = counted(SALES).get("orders", 0), counted(SALES).get("total_cents", 0)
    return Stats(
        orders_by_status={status: counted(STATUS).get(status, 0) for status in PROGRESS},
        cancellations_by_reason={reason: counted(REASON).get(reason, 0) for reason in CANCEL_REASONS},
        revenue_cents=captured - refunded,
        refunded_cents=refunded,
        average_order_value_cents=average(sold_cents, sold),
        top_products=top_products(counted(UNITS), counted(REVENUE), top),
        saga_seconds=percentiles(counted(SAGA)),
        as_of=as_of,
        payment_failures_by_reason={reason: counted(FAILURE).get(reason, 0) for reason in FAILURE_REASONS},
    )
