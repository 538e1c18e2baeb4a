"""An order the edge has just accepted, read and cancelled before the orders actor has applied it.

The orders actor's read model is behind its queue by as much as its backlog. Here that backlog is
made certain rather than likely: the actor's work queue is not consumed for a while (its queries
still are), so the PlaceOrder the edge sent waits in the queue while its customer reads and cancels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from actors.runtime.host import ActorHost
from brokers.contracts.orders import CancelOrder, PlaceOrder
from tests.e2e.orders_support import new_key, place, stocked_sku, wait_for_order
from tests.e2e.support import User, assert_problem
from tests.helpers import Tap

SHOP = ("catalog", "inventory", "orders")


@asynccontextmanager
async def work_held(host: ActorHost, actor: str) -> AsyncIterator[None]:
    """The actor takes nothing from its work queue during the block; its queries are still answered."""
    [work] = [subscriber for subscriber in host.broker.subscribers if subscriber.queue.name == actor]
    await work.stop()
    try:
        yield
    finally:
        await work.start()


async def test_an_order_just_accepted_is_its_customers_to_read_and_cancel_and_nobody_elses(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, bob: User, command_tap: Tap
) -> None:
    shop = await start_host(*SHOP)
    sku = await stocked_sku(edge, admin)

    async with work_held(shop, "orders"):
        placed = await place(edge, ann, [{"sku": sku, "quantity": 2}])
        order_id = placed.json()["order_id"]
        read = await edge.get(f"/orders/{order_id}", headers=ann.headers)
        bobs_read = await edge.get(f"/orders/{order_id}", headers=bob.headers)
        bobs_cancel = await edge.post(f"/orders/{order_id}/cancel", headers=bob.headers)
        cancel = await edge.post(f"/orders/{order_id}/cancel", headers=ann.headers)

    assert placed.status_code == 202, placed.text
    assert read.status_code == 200, read.text
    pending = read.json()
    assert (pending["status"], pending["order_id"], pending["customer_id"]) == (
        "accepted",
        order_id,
        ann.user_id,
    )
    assert pending["lines"] == [{"sku": sku, "quantity": 2}] and pending["accepted_at"]
    assert_problem(bobs_read, 404)
    assert_problem(bobs_cancel, 404)
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["order_id"] == order_id
    # Once orders has the PlaceOrder, the cancel (which waited in its retries) applies to it.
    cancelled = await wait_for_order(edge, ann, order_id, until=lambda order: order["status"] == "cancelled")
    assert (cancelled["cancel_reason"], cancelled["total_cents"]) == ("customer", 2 * 1299)
    [sent] = await command_tap.wait_for(CancelOrder.TYPE)
    assert sent.message_id == cancel.json()["message_id"]
    # As for any cancelled order.
    assert_problem(await edge.post(f"/orders/{order_id}/cancel", headers=ann.headers), 409)


async def test_the_same_key_while_the_order_is_pending_is_the_same_order_or_a_409(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    shop = await start_host(*SHOP)
    sku = await stocked_sku(edge, admin)
    key = new_key()

    async with work_held(shop, "orders"):
        first = await place(edge, ann, [{"sku": sku, "quantity": 1}], key=key)
        again = await place(edge, ann, [{"sku": sku, "quantity": 1}], key=key)
        other = await place(edge, ann, [{"sku": sku, "quantity": 3}], key=key)

    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    assert assert_problem(other, 409)["type"] == "urn:emporium:problem:idempotency-key-reused"
    placed = await wait_for_order(edge, ann, first.json()["order_id"])
    assert [line["quantity"] for line in placed["lines"]] == [1]
    assert [m.message_id for m in command_tap.of_type(PlaceOrder.TYPE)] == [first.json()["message_id"]]
