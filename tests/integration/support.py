"""Shared tools of the delivery, concurrency and topology tests (no tests in here).

They look at the system from outside, the way an operator would: the management API to publish what
the contracts would refuse, plain AMQP to read queues, request/reply for queries, and the runtime's
own metrics.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from pamqp.commands import Queue

from actors.runtime import metrics
from actors.runtime.host import ActorHost
from brokers.contracts.catalog import ProductCreated
from brokers.contracts.inventory import GetStock, Restock, StockView
from brokers.contracts.orders import OrderLine, OrderPlaced
from brokers.deadletters import ATTEMPTS, ORIGIN, REASON
from brokers.management import vhost_of
from brokers.rpc import Requester, requesting
from brokers.settings import Settings
from tests.helpers import eventually, send


def publish_raw(
    management: httpx.Client,
    settings: Settings,
    *,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: dict[str, Any],
) -> None:
    """Publish exactly these AMQP properties, through RabbitMQ's management API.

    Python clients cannot send some broken messages: aiormq gives every message without an id a
    random one. Other clients (and an operator in the management UI) can.
    """
    response = management.post(
        f"/api/exchanges/{quote(vhost_of(settings.rabbitmq_url), safe='')}/{quote(exchange, safe='')}/publish",
        json={
            "properties": properties,
            "routing_key": routing_key,
            "payload": base64.b64encode(body).decode(),
            "payload_encoding": "base64",
        },
    )
    response.raise_for_status()
    assert response.json() == {"routed": True}, f"nothing is bound for {routing_key} on {exchange}"


async def outcome_count(actor: str, outcome: str) -> float:
    """How many messages the runtimes of this process counted with this outcome for this actor.

    Async only so that it can be a probe for ``eventually``.
    """
    return sum(
        sample.value
        for family in metrics.MESSAGES.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("actor") == actor
        and sample.labels.get("outcome") == outcome
    )


class Amqp:
    """A plain AMQP channel in the test's vhost, for reading queues."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue right now (a passive declare: no statistics delay)."""
        return (await self._status(queue)).message_count or 0

    async def consumers(self, queue: str) -> int:
        return (await self._status(queue)).consumer_count or 0

    async def _status(self, queue: str) -> Queue.DeclareOk:
        return (await self.channel.declare_queue(queue, passive=True)).declaration_result

    async def take(self, queue: str, count: int, *, timeout: float = 20.0) -> list[AbstractIncomingMessage]:
        """Remove and return ``count`` messages from a queue, waiting for them to arrive."""
        source = await self.channel.get_queue(queue, ensure=False)
        taken: list[AbstractIncomingMessage] = []

        async def more() -> list[AbstractIncomingMessage]:
            message = await source.get(no_ack=True, fail=False)
            if message is not None:
                taken.append(message)
            return taken

        return await eventually(
            more, until=lambda got: len(got) >= count, timeout=timeout, what=f"{count} in {queue}"
        )


@asynccontextmanager
async def amqp(settings: Settings) -> AsyncIterator[Amqp]:
    connection = await aio_pika.connect_robust(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        yield Amqp(channel)
    finally:
        await connection.close()


def requester(settings: Settings) -> AbstractAsyncContextManager[Requester]:
    """A started requester of the tests' (brokers.rpc.requesting)."""
    return requesting(settings, app_name="tests")


@asynccontextmanager
async def running(host: ActorHost) -> AsyncIterator[ActorHost]:
    """A host built by the test itself (to change it before it starts), stopped whatever happens."""
    try:
        await host.start()
        yield host
    finally:
        await host.stop()


def header(message: AbstractIncomingMessage, name: str) -> Any:
    return (message.headers or {}).get(name)


def dead_letter_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    """Where a dead letter came from, why it died, after how many attempts (as the headers say)."""
    return {name: header(message, name) for name in (ORIGIN, REASON, ATTEMPTS)}


def product_created(sku: str) -> ProductCreated:
    return ProductCreated(
        product_id=f"p-{sku}",
        sku=sku,
        name=f"Product {sku}",
        category="test",
        price_cents=1_000,
        currency="EUR",
    )


async def stock(broker: RabbitBroker, asker: Requester, sku: str, quantity: int) -> StockView:
    """Make a SKU known to inventory (as catalog would) and receive ``quantity`` units of it."""
    await send(broker, product_created(sku))
    await eventually(lambda: asker.ask(GetStock(sku=sku), StockView), what=f"{sku} known to inventory")
    await send(broker, Restock(sku=sku, quantity=quantity))
    return await eventually(
        lambda: asker.ask(GetStock(sku=sku), StockView),
        until=lambda level: level.on_hand == quantity,
        what=f"{quantity} units of {sku} on hand",
    )


def order_placed(order_id: str, *lines: tuple[str, int]) -> OrderPlaced:
    unit_price = 1_000
    return OrderPlaced(
        order_id=order_id,
        customer_id="customer-1",
        lines=[OrderLine(sku=sku, quantity=quantity, unit_price_cents=unit_price) for sku, quantity in lines],
        total_cents=sum(quantity * unit_price for _, quantity in lines),
        currency="EUR",
    )
