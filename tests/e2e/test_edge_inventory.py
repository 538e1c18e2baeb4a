"""Stock through the edge: restocks reach the inventory actor, once per Idempotency-Key."""

from __future__ import annotations

import httpx

from tests.e2e.support import User, assert_problem, create_product, messages_taken, wait_for_json
from tests.helpers import eventually


async def _known_sku(edge: httpx.AsyncClient, admin: User) -> str:
    """A SKU inventory has learnt of (from product.created), with nothing on hand."""
    sku = (await create_product(edge, admin))["sku"]
    stock = await wait_for_json(edge, f"/inventory/{sku}")
    assert stock["on_hand"] == 0
    return sku


async def test_a_restock_shows_on_hand(start_host, edge: httpx.AsyncClient, admin: User) -> None:
    await start_host("catalog", "inventory")
    sku = await _known_sku(edge, admin)

    response = await edge.post(f"/inventory/{sku}/restock", json={"quantity": 7}, headers=admin.headers)

    assert response.status_code == 202, response.text
    assert response.json()["sku"] == sku and response.json()["status"] == "accepted"
    assert response.headers["location"] == f"/inventory/{sku}"
    stock = await wait_for_json(edge, f"/inventory/{sku}", until=lambda s: s["on_hand"] == 7)
    assert stock["received"] == 7 and stock["reserved"] == 0


async def test_a_restock_of_a_sku_inventory_does_not_know_is_a_404_and_sends_nothing(
    start_host, edge: httpx.AsyncClient, admin: User, command_tap
) -> None:
    await start_host("catalog", "inventory")

    response = await edge.post("/inventory/NO-SUCH-SKU/restock", json={"quantity": 5}, headers=admin.headers)

    problem = assert_problem(response, 404)
    assert "NO-SUCH-SKU" in problem["detail"]
    # A known SKU's restock after it is sent; the tap has seen that one only (was: 202, then a dead letter).
    sku = await _known_sku(edge, admin)
    sent = await edge.post(f"/inventory/{sku}/restock", json={"quantity": 1}, headers=admin.headers)
    assert sent.status_code == 202
    restocks = await command_tap.wait_for("inventory.restock")
    assert [m.message_id for m in restocks] == [sent.json()["message_id"]]


async def test_the_same_restock_sent_twice_with_one_idempotency_key_is_applied_once(
    start_host, edge: httpx.AsyncClient, admin: User
) -> None:
    await start_host("catalog", "inventory")
    sku = await _known_sku(edge, admin)
    applied = await messages_taken("inventory", "inventory.restock", "applied")
    skipped = await messages_taken("inventory", "inventory.restock", "duplicate")
    retry = admin.with_headers(**{"Idempotency-Key": "restock-0001-attempt"})

    first = await edge.post(f"/inventory/{sku}/restock", json={"quantity": 5}, headers=retry)
    again = await edge.post(f"/inventory/{sku}/restock", json={"quantity": 5}, headers=retry)

    assert first.status_code == again.status_code == 202
    assert first.json()["message_id"] == again.json()["message_id"]

    async def outcomes() -> tuple[float, float]:
        return (
            await messages_taken("inventory", "inventory.restock", "applied") - applied,
            await messages_taken("inventory", "inventory.restock", "duplicate") - skipped,
        )

    await eventually(outcomes, until=lambda seen: seen == (1, 1), what="one restock applied, one skipped")
    assert (await edge.get(f"/inventory/{sku}")).json()["on_hand"] == 5

    # Another key is another restock.
    other = admin.with_headers(**{"Idempotency-Key": "restock-0002-attempt"})
    assert (
        await edge.post(f"/inventory/{sku}/restock", json={"quantity": 5}, headers=other)
    ).status_code == 202
    await wait_for_json(edge, f"/inventory/{sku}", until=lambda s: s["on_hand"] == 10)


async def test_an_unknown_sku_is_a_404_problem(start_host, edge: httpx.AsyncClient) -> None:
    await start_host("inventory")

    problem = assert_problem(await edge.get("/inventory/NO-SUCH-SKU"), 404)

    assert "NO-SUCH-SKU" in problem["detail"]
