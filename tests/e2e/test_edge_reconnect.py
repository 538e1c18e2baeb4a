"""The edge through a RabbitMQ restart: it serves again by itself, and says ready only once it can.

RabbitMQ here is a node of the test's own (ops/servers.py): the shared one must never be stopped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from brokers.settings import Settings
from ops.servers import RabbitNode, scratch_directory
from tests.e2e.conftest import ServeEdge
from tests.e2e.orders_support import new_key, place, priced_sku, wait_for_order
from tests.e2e.support import User
from tests.helpers import eventually

SHOP = ("catalog", "inventory", "orders")
# Long enough for every client of the node to be back: the edge and the actors each retry their
# connection on their own every few seconds, and a query waits in its queue for its actor meanwhile.
BACK_WITHIN_S = 30.0
QUERY_TIMEOUT_S = 15.0


@pytest.fixture
async def rabbit_node() -> AsyncIterator[RabbitNode]:
    with scratch_directory("emporium-test-rabbitmq-") as directory:
        node = RabbitNode(f"emporium-test-{uuid.uuid4().hex[:6]}", directory / "rabbitmq")
        await asyncio.to_thread(node.start)
        try:
            yield node
        finally:
            await asyncio.to_thread(node.stop)


@pytest.fixture
def settings(settings: Settings, rabbit_node: RabbitNode) -> Settings:
    """The test's settings (its databases, fast retries), on the private node instead of the shared one."""
    return settings.model_copy(update={"rabbitmq_url": rabbit_node.amqp_url})


@pytest.fixture
async def edge(serve_edge: ServeEdge) -> httpx.AsyncClient:
    return await serve_edge(emporium_query_timeout_s=QUERY_TIMEOUT_S)


async def _ready_is(edge: httpx.AsyncClient, status: int, what: str) -> None:
    await eventually(
        lambda: edge.get("/ready"), until=lambda r: r.status_code == status, timeout=BACK_WITHIN_S, what=what
    )


async def test_after_a_rabbitmq_restart_the_edge_is_ready_again_and_takes_orders(
    rabbit_node: RabbitNode, start_host, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    await start_host(*SHOP)
    lines = [{"sku": await priced_sku(edge, admin), "quantity": 1}]
    assert (await place(edge, ann, lines)).status_code == 202

    await asyncio.to_thread(rabbit_node.ctl, "stop_app")
    await _ready_is(edge, 503, "the edge to say it is not ready while RabbitMQ is down")
    down = await place(edge, ann, lines)
    await asyncio.to_thread(rabbit_node.ctl, "start_app")
    await _ready_is(edge, 200, "the edge to be ready again")
    # Ready means ready: the first order after it is taken, no retry needed.
    placed = await place(edge, ann, lines, key=new_key())

    assert down.status_code == 503, down.text
    assert placed.status_code == 202, placed.text
    # A query through the edge is answered too.
    order = await wait_for_order(edge, ann, placed.json()["order_id"])
    assert order["customer_id"] == ann.user_id
