"""Admission control on the real RabbitMQ: the edge reads the depths of the work queues an order
passes before its confirmation and refuses new orders (503) while any holds more than the bound."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.contracts.common import Line
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import PlaceOrder
from brokers.envelope import Envelope
from brokers.rpc import BrokerUnavailable
from brokers.settings import Settings
from brokers.topology import declare, work_queue_names
from edge.limits import ORDERS_WORK_QUEUE, OVERLOADED, SAGA_WORK_QUEUES, install_limits, shed_orders_load
from edge.link import RabbitLink
from edge.observe import ObserveRequests
from edge.problems import PROBLEM_JSON, install_problem_handlers
from tests.helpers import eventually, send

WAITING = 5


def _place_order_command(order_id: str) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id, customer_id="c-1", lines=[Line(sku="LAMP", quantity=1)], request_digest="d"
    )


@pytest.fixture
async def link(settings: Settings) -> AsyncIterator[RabbitLink]:
    link = RabbitLink(settings)
    await link.open()
    yield link
    await link.close()


@pytest.fixture
async def saga_queues(settings: Settings, broker) -> None:
    """The saga's work queues as the actors' hosts declare them."""
    for name in ("orders", "inventory", "payments"):
        await declare(broker, topology_of(ACTORS[name], settings))
    declared = [spec.name for name in ACTORS for spec in topology_of(ACTORS[name], settings).work]
    assert set(SAGA_WORK_QUEUES) <= set(declared)


@pytest.fixture
async def waiting_orders(settings: Settings, broker, link: RabbitLink, saga_queues) -> int:
    """The orders work queue holding WAITING commands."""
    for n in range(WAITING):
        await send(broker, _place_order_command(f"o-{n}"))
    # Published with confirms; the queue's count may still lag behind them for a moment.
    return await eventually(
        lambda: link.queue_depth(ORDERS_WORK_QUEUE),
        until=lambda depth: depth == WAITING,
        timeout=10,
        what=f"{WAITING} commands in the orders queue",
    )


def _edge(settings: Settings, link: RabbitLink, bound: int) -> FastAPI:
    bounded = settings.model_copy(update={"emporium_saga_backlog_bound": bound})
    app = FastAPI()
    app.state.settings = bounded
    app.state.link = link
    install_problem_handlers(app)
    install_limits(app, bounded)
    app.add_middleware(ObserveRequests)

    @app.post("/orders", status_code=202, dependencies=[Depends(shed_orders_load)])
    async def place() -> dict[str, str]:
        return {"status": "accepted"}

    return app


async def _place_order(app: FastAPI) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge") as client:
        return await client.post("/orders")


async def test_orders_are_refused_once_the_queue_is_over_the_bound(settings, link, waiting_orders):
    assert waiting_orders == WAITING
    response = await _place_order(_edge(settings, link, bound=WAITING - 1))
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["type"] == OVERLOADED
    assert problem["detail"] == (
        f"the orders queue holds {WAITING} messages, above the saga's backlog bound {WAITING - 1}; retry later"
    )


async def test_orders_are_refused_while_inventory_lags_behind(settings, broker, link, saga_queues):
    for _ in range(WAITING):  # commands only inventory takes: inventory is the slow actor
        await send(broker, Restock(sku="LAMP", quantity=1))

    async def depths() -> dict[str, int]:
        return {queue: await link.queue_depth(queue) for queue in work_queue_names("inventory")}

    # One SKU's restocks all wait in one of inventory's partitions.
    waiting = await eventually(
        depths,
        until=lambda depth: WAITING in depth.values(),
        timeout=10,
        what=f"{WAITING} messages waiting in an inventory partition",
    )
    [partition] = [queue for queue, depth in waiting.items() if depth == WAITING]
    response = await _place_order(_edge(settings, link, bound=WAITING - 1))
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"the {partition} queue holds {WAITING} messages")


async def test_orders_pass_while_the_queue_is_within_the_bound(settings, link, waiting_orders):
    assert waiting_orders == WAITING
    response = await _place_order(_edge(settings, link, bound=WAITING))
    assert response.status_code == 202


async def test_a_missing_queue_is_reported_and_leaves_the_link_working(settings, broker, link):
    with pytest.raises(BrokerUnavailable, match="no queue orders.nowhere"):
        await link.queue_depth("orders.nowhere")
    # RabbitMQ closed the channel of the failed declaration; commands are still sent and counted.
    topology = topology_of(ACTORS["orders"], settings)
    await declare(broker, topology)
    command = _place_order_command("o-x")
    await link.send(command, Envelope.first(command, "req-1"))
    depth = await eventually(lambda: link.queue_depth(ORDERS_WORK_QUEUE), until=lambda d: d == 1, timeout=10)
    assert depth == 1
