"""The saga as it happens: one subscription per edge process, fanned out to followers of an order.

The edge binds ONE queue to ``emporium.events`` for every event that names an order, and hands each
message to the listeners following its correlation id: every message of an order's saga carries the
order id as its correlation id. Observers hear of every one of them, followed or not (the edge's
pending orders learn so that orders has applied an order). A listener holds at most ``backlog``
events waiting to be sent; one that falls further behind is dropped with a final ``dropped`` event
rather than growing memory, and so is every listener when the subscription is interrupted (events
may have been missed meanwhile).
A dropped follower reconnects and starts again from the order's current status.

The same queue carries the few other events the edge keeps a view of (``VIEW_EVENT_TYPES``: a
deactivation, which ends its user's tokens, see edge.subjects; a product's price, see edge.prices),
handed to the handler named for their type; whoever keeps such a view hears of every gap in the
subscription (``on_gap``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from fastapi.sse import ServerSentEvent

import brokers.contracts  # noqa: F401  (registers every contract: the saga's events are read from them)
from brokers.contracts.catalog import ProductCreated, ProductPriceChanged
from brokers.contracts.identity import UserDeactivated
from brokers.contracts.orders import OrderCancelled, OrderDelivered
from brokers.envelope import REGISTRY, Kind
from brokers.factory import named_url
from brokers.rpc import BrokerUnavailable
from brokers.topology import EVENTS

log = structlog.get_logger()

# Every event that names an order is part of some order's saga.
SAGA_EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        t
        for t, contract in REGISTRY.items()
        if contract.KIND is Kind.EVENT and "order_id" in contract.model_fields
    )
)
# Not the saga's: events the edge keeps a view of, each handed to its handler (see ``on_event``).
VIEW_EVENT_TYPES: tuple[str, ...] = (UserDeactivated.TYPE, ProductCreated.TYPE, ProductPriceChanged.TYPE)
# Every routing key the edge's queue is bound with (what its RabbitMQ user may read: ops.production).
BOUND_EVENT_TYPES: tuple[str, ...] = (*SAGA_EVENT_TYPES, *VIEW_EVENT_TYPES)
LISTENER_BACKLOG = 256
# What the subscription's connection is for, in its name in the RabbitMQ UI.
SAGA_EVENTS_ROLE = "saga events"
# The edge's own event types: where the order is when following starts, and the end of a follow cut short.
SNAPSHOT = "snapshot"
DROPPED = "dropped"
# After these nothing more happens to an order, so following it ends (compensations are not followed).
FINAL_ORDER_EVENTS = frozenset({OrderDelivered.TYPE, OrderCancelled.TYPE})


@dataclass(frozen=True)
class SagaEvent:
    type: str
    data: str  # JSON on one line: the message body, or the edge's own
    id: str | None = None  # the message id (None for the edge's own events)
    final: bool = False  # the last event of a follow

    def sse(self) -> ServerSentEvent:
        return ServerSentEvent(event=self.type, id=self.id, raw_data=self.data)


def snapshot(order_json: str, *, ended: bool) -> SagaEvent:
    """Where the order is when following starts (``ended``: it will not move any more)."""
    return SagaEvent(SNAPSHOT, order_json, final=ended)


def dropped(reason: str, detail: str) -> SagaEvent:
    return SagaEvent(DROPPED, json.dumps({"reason": reason, "detail": detail}), final=True)


class Listener:
    """The saga events of one order for one follower, in arrival order."""

    def __init__(self, backlog: int) -> None:
        self._backlog = backlog
        # Unbounded as a queue, bounded by ``offer``: the final "dropped" event must always fit.
        self._events: asyncio.Queue[SagaEvent] = asyncio.Queue()
        self.is_dropped = False

    def offer(self, event: SagaEvent) -> None:
        if self.is_dropped:
            return
        if self._events.qsize() >= self._backlog:
            self.drop("too_slow", f"more than {self._backlog} events were waiting to be sent")
            return
        self._events.put_nowait(event)

    def drop(self, reason: str, detail: str) -> None:
        """Stop following: what is waiting is still sent, then a final ``dropped`` event."""
        if not self.is_dropped:
            self.is_dropped = True
            self._events.put_nowait(dropped(reason, detail))

    async def next(self, timeout_s: float) -> SagaEvent | None:
        """The next event, or None when none came within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._events.get()
        except TimeoutError:
            return None


SSE_QUEUE_PREFIX = "edge.sse."


def sse_queue_name() -> str:
    return f"{SSE_QUEUE_PREFIX}{uuid.uuid4().hex}"


class SagaEvents:
    """The edge's subscription to the saga's events, and the listeners following orders."""

    def __init__(self, url: str, *, app_name: str, backlog: int = LISTENER_BACKLOG) -> None:
        self._url = named_url(url, app_name, SAGA_EVENTS_ROLE)
        self._backlog = backlog
        self._connection: AbstractRobustConnection | None = None
        # True while the queue is consumed: from start, and again once a reconnection restored it.
        self._subscribed = False
        self._listeners: dict[str, set[Listener]] = {}
        self._observers: list[Callable[[str], None]] = []
        self._handlers: dict[str, Callable[[AbstractIncomingMessage], None]] = {}
        self._gap_callbacks: list[Callable[[], None]] = []

    def on_event(self, event_type: str, handler: Callable[[AbstractIncomingMessage], None]) -> None:
        """Hand every event of a ``VIEW_EVENT_TYPES`` type to ``handler``."""
        if event_type not in VIEW_EVENT_TYPES:
            raise ValueError(f"the edge's queue is not bound to {event_type}")
        self._handlers[event_type] = handler

    def on_gap(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when events may have been missed: the subscription went down, or came back."""
        self._gap_callbacks.append(callback)

    def observe(self, observer: Callable[[str], None]) -> None:
        """Tell ``observer`` the order id of every saga event that comes, followed or not."""
        self._observers.append(observer)

    async def start(self) -> None:
        connection = await aio_pika.connect_robust(self._url)
        try:
            channel = await connection.channel()
            # A classic, exclusive, auto-delete queue on purpose: it is this process's ephemeral view
            # of the events, not durable work. It must go with the process (a durable queue would pile
            # up events for an edge that is gone) and nothing in it matters after that, since a
            # follower starts from the order's current status. Quorum queues cannot be exclusive.
            # Named by the edge (not by the client library), so permissions can name it exactly.
            queue = await channel.declare_queue(
                sse_queue_name(), exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
            )
            for event_type in BOUND_EVENT_TYPES:
                await queue.bind(EVENTS.name, routing_key=event_type)
            # No acks: losing this copy with the connection loses nothing that matters (see above).
            await queue.consume(self._deliver, no_ack=True)
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(self._interrupted)
        connection.reconnect_callbacks.add(self._resubscribed)
        self._connection, self._subscribed = connection, True

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def connected(self) -> bool:
        return self._subscribed

    @contextmanager
    def listen(self, order_id: str) -> Iterator[Listener]:
        """Follow an order's saga from now on, for the duration of the block."""
        if not self.connected:
            raise BrokerUnavailable(
                "the edge is not subscribed to the saga's events (RabbitMQ is unreachable)"
            )
        listener = Listener(self._backlog)
        followers = self._listeners.setdefault(order_id, set())
        followers.add(listener)
        try:
            yield listener
        finally:
            followers.discard(listener)
            if not followers:
                self._listeners.pop(order_id, None)

    @property
    def following(self) -> int:
        """How many listeners are following an order now."""
        return sum(len(followers) for followers in self._listeners.values())

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        handler = self._handlers.get(message.type or "")
        if handler is not None:
            handler(message)
            return
        order_id = message.correlation_id or ""
        for observer in self._observers:
            observer(order_id)
        followers = self._listeners.get(order_id)
        if not followers:
            return
        type_ = message.type or "unknown"
        event = SagaEvent(
            type=type_,
            data=message.body.decode("utf-8", errors="replace"),
            id=message.message_id,
            final=type_ in FINAL_ORDER_EVENTS,
        )
        for listener in tuple(followers):
            listener.offer(event)

    def _resubscribed(self, _connection: Any) -> None:
        # aio-pika calls this once the channel, the queue, its bindings and the consumer are restored.
        self._subscribed = True
        self._gap()
        log.info("edge.saga_events_resubscribed")

    def _interrupted(self, _connection: Any, exc: BaseException | None = None) -> None:
        self._subscribed = False
        self._gap()
        if self.following:
            log.warning("edge.saga_events_interrupted", followers=self.following, error=str(exc or ""))
        for followers in self._listeners.values():
            for listener in followers:
                listener.drop("interrupted", "the edge lost its subscription to the saga's events; reconnect")

    def _gap(self) -> None:
        for callback in self._gap_callbacks:
            callback()


async def stream(
    first: SagaEvent, listener: Listener, *, heartbeat_s: float
) -> AsyncIterator[ServerSentEvent]:
    """The Server-Sent Events of a follow: ``first``, then the listener's events until a final one.

    A comment line goes out whenever nothing happened for ``heartbeat_s``, so that proxies keep the
    connection open and a client can tell a quiet saga from a dead connection.
    """
    event: SagaEvent | None = first
    while True:
        if event is None:
            yield ServerSentEvent(comment="heartbeat")
        else:
            yield event.sse()
            if event.final:
                return
        event = await listener.next(heartbeat_s)
