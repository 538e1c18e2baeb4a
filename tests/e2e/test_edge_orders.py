"""Orders through the edge, on the real catalog, inventory and orders actors (and more where needed)."""

from __future__ import annotations

import asyncio
import time

import httpx

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.contracts.common import MAX_CENTS
from brokers.contracts.orders import CancelOrder, PlaceOrder
from brokers.settings import Settings
from brokers.topology import declare
from tests.e2e.orders_support import (
    new_key,
    place,
    placed_order,
    priced_sku,
    sku_orders_price,
    stocked_sku,
    wait_for_order,
)
from tests.e2e.support import User, assert_problem, assert_unauthenticated
from tests.helpers import Tap

SHOP = ("catalog", "inventory", "orders")


async def test_a_placed_order_is_accepted_with_its_links_and_read_by_its_customer(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, bob: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin, price_cents=1250)

    response = await place(edge, ann, [{"sku": sku, "quantity": 2}])

    assert response.status_code == 202, response.text
    accepted = response.json()
    order_id = accepted["order_id"]
    assert accepted["status"] == "accepted" and accepted["correlation_id"] == order_id
    assert response.headers["location"] == f"/orders/{order_id}"
    assert accepted["links"] == {
        "self": f"/orders/{order_id}",
        "timeline": f"/orders/{order_id}/timeline",
        "events": f"/orders/{order_id}/events",
        "cancel": f"/orders/{order_id}/cancel",
    }
    [sent] = await command_tap.wait_for(PlaceOrder.TYPE)
    assert (sent.message_id, sent.correlation_id) == (accepted["message_id"], order_id)
    order = await wait_for_order(edge, ann, order_id)
    assert (order["customer_id"], order["total_cents"]) == (ann.user_id, 2500)
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [(sku, 2)]
    mine = (await edge.get("/orders", headers=ann.headers)).json()
    assert [o["order_id"] for o in mine["items"]] == [order_id] and mine["total"] == 1
    assert (await edge.get("/orders", headers=bob.headers)).json()["total"] == 0


async def test_the_same_key_and_lines_again_is_the_same_order_placed_once(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin)
    key = new_key()
    first = await place(edge, ann, [{"sku": sku, "quantity": 1}], key)
    await wait_for_order(edge, ann, first.json()["order_id"])
    # The same lines spelled differently are the same request.
    spelled_otherwise = f'{{ "lines" : [ {{"quantity": 1, "sku": "{sku}"}} ] }}'

    again = await place(edge, ann, [{"sku": sku, "quantity": 1}], key)
    respelled = await edge.post(
        "/orders",
        content=spelled_otherwise,
        headers=ann.with_headers(**{"Idempotency-Key": key, "content-type": "application/json"}),
    )
    marker = await place(edge, ann, [{"sku": sku, "quantity": 1}])

    assert first.status_code == again.status_code == respelled.status_code == 202
    assert first.json() == again.json() == respelled.json()
    assert again.headers["location"] == first.headers["location"]
    # Each request finished before the next began: a command either retry sent would come before the marker's.
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=2)
    assert [m.message_id for m in sent] == [first.json()["message_id"], marker.json()["message_id"]]
    assert marker.json()["order_id"] != first.json()["order_id"]


async def test_the_same_key_with_other_lines_is_a_409_once_the_order_is_known(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, bob: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin)
    key = new_key()
    first = await place(edge, ann, [{"sku": sku, "quantity": 1}], key)
    await wait_for_order(edge, ann, first.json()["order_id"])

    conflict = await place(edge, ann, [{"sku": sku, "quantity": 3}], key)
    bobs = await place(edge, bob, [{"sku": sku, "quantity": 3}], key)  # a key is the customer's own

    problem = assert_problem(conflict, 409)
    assert problem["type"] == "urn:emporium:problem:idempotency-key-reused"
    assert first.json()["order_id"] in problem["detail"]
    assert bobs.status_code == 202 and bobs.json()["order_id"] != first.json()["order_id"]
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=2)
    assert [m.message_id for m in sent] == [first.json()["message_id"], bobs.json()["message_id"]]


async def test_one_key_sent_twice_at_once_with_two_bodies_places_one_order_and_refuses_the_other(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin)
    key = new_key()

    answers = await asyncio.gather(
        place(edge, ann, [{"sku": sku, "quantity": 1}], key),
        place(edge, ann, [{"sku": sku, "quantity": 2}], key),
    )

    assert sorted(answer.status_code for answer in answers) == [202, 409], [a.text for a in answers]
    [accepted] = [answer for answer in answers if answer.status_code == 202]
    marker = await place(edge, ann, [{"sku": sku, "quantity": 1}])
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=2)
    assert [m.message_id for m in sent] == [accepted.json()["message_id"], marker.json()["message_id"]]


async def test_orders_without_a_key_customer_or_known_skus_are_refused_and_send_nothing(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await priced_sku(edge, admin)
    lines = {"lines": [{"sku": sku, "quantity": 1}]}

    without_key = await edge.post("/orders", json=lines, headers=ann.headers)
    without_customer = await edge.post("/orders", json=lines, headers={"Idempotency-Key": new_key()})
    unknown_sku = await place(edge, ann, [{"sku": sku, "quantity": 1}, {"sku": "NO-SUCH-SKU", "quantity": 1}])
    marker = await place(edge, ann, [{"sku": sku, "quantity": 1}])

    [missing] = assert_problem(without_key, 422)["errors"]
    assert missing["location"] == "header.Idempotency-Key"
    assert "access token" in assert_unauthenticated(without_customer)["detail"]
    [unknown] = assert_problem(unknown_sku, 422)["errors"]
    assert unknown == {"location": "body.lines.1.sku", "message": "no product has SKU NO-SUCH-SKU"}
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=1)
    assert [m.message_id for m in sent] == [marker.json()["message_id"]]


async def test_an_order_the_orders_actor_could_not_price_is_refused_422_and_sends_nothing(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    dear = await priced_sku(edge, admin, price_cents=MAX_CENTS)

    above = await place(edge, ann, [{"sku": dear, "quantity": 2}])
    piled_up = await place(edge, ann, [{"sku": dear, "quantity": 600_000}] * 2)
    marker = await place(edge, ann, [{"sku": dear, "quantity": 1}])  # the largest payable total: fine

    [unpayable] = assert_problem(above, 422)["errors"]
    assert (
        unpayable["location"] == "body.lines" and "above the largest payable amount" in unpayable["message"]
    )
    assert "add up to 1200000" in assert_problem(piled_up, 422)["detail"]
    sent = await command_tap.wait_for(PlaceOrder.TYPE, count=1)
    assert [m.message_id for m in sent] == [marker.json()["message_id"]]


async def test_lines_of_one_sku_are_placed_as_one_line(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    await start_host(*SHOP)
    sku = await stocked_sku(edge, admin)

    response = await place(edge, ann, [{"sku": sku, "quantity": 1}, {"sku": sku, "quantity": 2}])

    assert response.status_code == 202, response.text
    order = await wait_for_order(edge, ann, response.json()["order_id"])
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [(sku, 3)]


async def test_an_order_is_placed_unchecked_when_inventory_cannot_tell_whether_its_skus_exist(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    await start_host("catalog", "orders")  # no inventory deployed: nobody answers inventory.get_stock
    sku = await sku_orders_price(edge, admin)

    response = await place(edge, ann, [{"sku": sku, "quantity": 1}])

    assert response.status_code == 202, response.text
    order = await wait_for_order(edge, ann, response.json()["order_id"])
    assert order["status"] == "placed"


async def test_another_customers_order_is_answered_like_a_missing_one(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, bob: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await stocked_sku(edge, admin)
    order_id = (await placed_order(edge, ann, [{"sku": sku, "quantity": 1}]))["order_id"]
    missing_id = "no-such-order"

    for path in ("/orders/{}", "/orders/{}/timeline"):
        theirs = assert_problem(await edge.get(path.format(order_id), headers=bob.headers), 404)
        missing = assert_problem(await edge.get(path.format(missing_id), headers=bob.headers), 404)
        assert theirs["detail"].replace(order_id, "ID") == missing["detail"].replace(missing_id, "ID")
        assert (theirs["type"], theirs["title"]) == (missing["type"], missing["title"])
    bobs_cancel = await edge.post(f"/orders/{order_id}/cancel", headers=bob.headers)
    anns_cancel = await edge.post(f"/orders/{order_id}/cancel", headers=ann.headers)

    assert_problem(bobs_cancel, 404)
    assert anns_cancel.status_code == 202
    # Bob's request finished before Ann's began: a command it had sent would come first.
    sent = await command_tap.wait_for(CancelOrder.TYPE)
    assert [m.message_id for m in sent] == [anns_cancel.json()["message_id"]]


async def test_a_customer_cancels_an_order_once_and_not_after_it_is_cancelled(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host(*SHOP)
    sku = await stocked_sku(edge, admin)
    order_id = (await placed_order(edge, ann, [{"sku": sku, "quantity": 1}]))["order_id"]

    cancel = await edge.post(f"/orders/{order_id}/cancel", headers=ann.headers)

    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["order_id"] == order_id and cancel.json()["correlation_id"] == order_id
    cancelled = await wait_for_order(edge, ann, order_id, until=lambda o: o["status"] == "cancelled")
    assert cancelled["cancel_reason"] == "customer"
    too_late = assert_problem(await edge.post(f"/orders/{order_id}/cancel", headers=ann.headers), 409)
    assert too_late["type"] == "urn:emporium:problem:order-not-cancellable"
    assert "cancelled" in too_late["detail"]
    [sent] = await command_tap.wait_for(CancelOrder.TYPE)
    assert sent.message_id == cancel.json()["message_id"]


async def test_a_timeline_with_silent_sources_is_partial_and_answered_within_one_timeout(
    start_host, settings: Settings, broker, serve_edge, admin: User, ann: User
) -> None:
    await start_host(*SHOP)
    # Payments and shipping have their queues but nobody answers; notifications is not deployed at all.
    for silent in ("payments", "shipping"):
        await declare(broker, topology_of(ACTORS[silent], settings))
    edge = await serve_edge(emporium_query_timeout_s=1.0)
    sku = await priced_sku(edge, admin)
    order_id = (await placed_order(edge, ann, [{"sku": sku, "quantity": 1}]))["order_id"]

    started = time.monotonic()
    response = await edge.get(f"/orders/{order_id}/timeline", headers=ann.headers)
    waited = time.monotonic() - started

    assert response.status_code == 200, response.text
    timeline = response.json()
    assert timeline["partial"] is True
    assert {(m["source"], m["reason"]) for m in timeline["missing"]} == {
        ("payments", "timeout"),
        ("shipping", "timeout"),
        ("notifications", "unavailable"),
    }
    assert timeline["order"]["order_id"] == order_id
    assert timeline["payment"] is timeline["shipment"] is timeline["notifications"] is None
    assert timeline["steps"][0]["what"] == "order placed"
    # One timeout, not one per silent source: the sources are asked at once.
    assert 1.0 <= waited < 2.0


async def test_a_timeline_from_every_source_is_complete_with_sections_not_known_yet_empty(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    await start_host(*SHOP, "payments", "shipping", "notifications")
    sku = await priced_sku(edge, admin)
    order_id = (await placed_order(edge, ann, [{"sku": sku, "quantity": 1}]))["order_id"]

    response = await edge.get(f"/orders/{order_id}/timeline", headers=ann.headers)

    assert response.status_code == 200, response.text
    timeline = response.json()
    assert (timeline["partial"], timeline["missing"]) == (False, [])
    assert timeline["order"]["customer_id"] == ann.user_id
    assert timeline["shipment"] is None  # never shipped: not confirmed, and not missing either
    assert isinstance(timeline["notifications"], list)
    assert [step["at"] for step in timeline["steps"]] == sorted(step["at"] for step in timeline["steps"])
