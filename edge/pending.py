"""Orders the edge accepted that the orders actor has not applied yet.

``POST /orders`` answers 202 once RabbitMQ confirmed the PlaceOrder; the orders actor applies it when
it gets to it, after whatever waits before it in its queue. Until then orders' read model does not
know the order, and its customer, just told "accepted", would get a 404 for it. So the edge keeps
each acceptance and answers from it (status ``accepted``) until it learns that orders has the order:
orders answers for it, or an event of its saga comes by (every one follows order.placed, which
orders commits together with its read model). A PlaceOrder that orders refuses never becomes an
order: its acceptance is kept until the order's deadline has passed, then forgotten.

Once applied, the order is still remembered as placed (whose it is, and the fingerprint of the
request that placed it: ``PLACED_REMEMBERED`` of the latest), so that a retry of POST /orders is
answered here, the same order again or a 409 for other lines, without asking orders.

The acceptances live in this edge process only (see the README about several edge replicas).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from brokers.contracts.common import Line


class PendingOrder(BaseModel):
    """An order the edge accepted (its PlaceOrder is queued) that the orders actor has not applied yet.

    Its prices, total, history and later statuses come once orders has applied it: read it again.
    It can be cancelled already (the cancel is applied right after the order is).
    """

    model_config = ConfigDict(frozen=True)
    order_id: str
    customer_id: str
    status: Literal["accepted"]
    lines: list[Line]
    request_digest: str
    accepted_at: datetime = Field(description="When the edge accepted the order (UTC).")


# Orders remembered as placed once applied (a few hundred bytes each: tens of MB at most).
PLACED_REMEMBERED = 100_000


@dataclass(frozen=True)
class PlacedOrder:
    """An order this edge accepted and the orders actor has applied: whose, and the request's digest."""

    customer_id: str
    request_digest: str


class PendingOrders:
    def __init__(
        self,
        *,
        keep_s: float,
        clock: Callable[[], float] = time.monotonic,
        placed_remembered: int = PLACED_REMEMBERED,
    ) -> None:
        self._keep_s = keep_s
        self._clock = clock
        # In acceptance order, so also in expiry order: each with the clock's time it expires at.
        self._pending: OrderedDict[str, tuple[PendingOrder, float]] = OrderedDict()
        # Applied, oldest first; the oldest is forgotten beyond ``placed_remembered``.
        self._placed: OrderedDict[str, PlacedOrder] = OrderedDict()
        self._placed_remembered = placed_remembered
        # Per order id being placed: its lock and how many requests hold or wait for it.
        self._placing: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def placing(self, order_id: str) -> AsyncIterator[None]:
        """One request at a time places an order id in this edge: a second one (the same key sent
        twice at once, with the same or another body) waits, then finds the first's acceptance."""
        lock, users = self._placing.setdefault(order_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._placing[order_id]

    def accept(self, order: PendingOrder) -> None:
        self._forget_expired()
        if order.order_id not in self._pending:  # two requests at once: the first acceptance stays
            self._pending[order.order_id] = (order, self._clock() + self._keep_s)

    def of(self, order_id: str, customer_id: str) -> PendingOrder | None:
        """The customer's pending order with that id (None for anyone else's)."""
        self._forget_expired()
        entry = self._pending.get(order_id)
        if entry is None or entry[0].customer_id != customer_id:
            return None
        return entry[0]

    def applied(self, order_id: str) -> None:
        """Orders has the order now: its read model answers for it from here on."""
        entry = self._pending.pop(order_id, None)
        if entry is not None:
            order = entry[0]
            self._placed[order_id] = PlacedOrder(order.customer_id, order.request_digest)
            while len(self._placed) > self._placed_remembered:
                self._placed.popitem(last=False)

    def placed_by(self, order_id: str, customer_id: str) -> PendingOrder | PlacedOrder | None:
        """What this edge knows of the customer's order with that id: pending, placed, or nothing."""
        pending = self.of(order_id, customer_id)
        if pending is not None:
            return pending
        placed = self._placed.get(order_id)
        return placed if placed is not None and placed.customer_id == customer_id else None

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._pending:
            order_id, (_, expires_at) = next(iter(self._pending.items()))
            if expires_at > now:
                return
            del self._pending[order_id]
