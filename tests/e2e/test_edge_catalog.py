"""Products through the edge: writes reach the catalog actor, reads come back from it."""

from __future__ import annotations

import httpx

from tests.e2e.support import (
    assert_problem,
    create_product,
    messages_taken,
    new_product,
    wait_for_json,
)
from tests.helpers import Tap, eventually


async def test_a_created_product_can_be_read_and_is_listed(
    start_host, admin, edge: httpx.AsyncClient
) -> None:
    await start_host("catalog")
    body = new_product(name="Green teapot", category="tea", price_cents=2450)

    response = await edge.post("/products", json=body, headers=admin.headers)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "accepted"
    assert accepted["message_id"] and accepted["correlation_id"] == response.headers["x-request-id"]
    product_id = accepted["product_id"]
    assert response.headers["location"] == f"/products/{product_id}"
    product = await wait_for_json(edge, f"/products/{product_id}")
    assert {k: product[k] for k in body} == body
    assert product["currency"] == "EUR"
    listed = (await edge.get("/products")).json()
    assert listed["total"] == 1
    assert [p["product_id"] for p in listed["items"]] == [product_id]


async def test_price_and_details_changes_become_visible(start_host, admin, edge: httpx.AsyncClient) -> None:
    await start_host("catalog")
    product = await create_product(edge, admin, price_cents=1000)
    path = f"/products/{product['product_id']}"

    repriced = await edge.patch(f"{path}/price", json={"price_cents": 1250}, headers=admin.headers)
    renamed = await edge.patch(path, json={"name": "Red mug", "category": "mugs"}, headers=admin.headers)

    assert repriced.status_code == 202 and renamed.status_code == 202
    assert repriced.headers["location"] == renamed.headers["location"] == path
    changed = await wait_for_json(
        edge, path, until=lambda p: p["price_cents"] == 1250 and p["name"] == "Red mug"
    )
    assert changed["category"] == "mugs"
    assert changed["description"] == product["description"]  # not given, so not changed


async def test_products_are_filtered_by_category_and_paged(
    start_host, admin, edge: httpx.AsyncClient
) -> None:
    await start_host("catalog")
    created = [
        (await edge.post("/products", json=new_product(category=category), headers=admin.headers)).json()[
            "product_id"
        ]
        for category in ("kitchen", "garden", "kitchen", "kitchen", "garden")
    ]
    await wait_for_json(edge, "/products", until=lambda page: page["total"] == len(created))

    kitchen = (await edge.get("/products", params={"category": "kitchen"})).json()
    pages = [
        (await edge.get("/products", params={"category": "kitchen", "limit": 2, "offset": offset})).json()
        for offset in (0, 2)
    ]

    assert kitchen["total"] == 3
    assert {p["category"] for p in kitchen["items"]} == {"kitchen"}
    assert sorted(p["product_id"] for p in kitchen["items"]) == sorted(created[i] for i in (0, 2, 3))
    assert [len(page["items"]) for page in pages] == [2, 1]
    assert [page["total"] for page in pages] == [3, 3]
    assert [p["product_id"] for page in pages for p in page["items"]] == [
        p["product_id"] for p in kitchen["items"]
    ]


async def test_an_unknown_product_is_a_404_problem(start_host, edge: httpx.AsyncClient) -> None:
    await start_host("catalog")

    problem = assert_problem(await edge.get("/products/no-such-product"), 404)

    assert "no-such-product" in problem["detail"]


async def test_a_retried_create_with_the_same_idempotency_key_creates_one_product(
    start_host, admin, edge: httpx.AsyncClient, command_tap: Tap
) -> None:
    await start_host("catalog")
    duplicates = await messages_taken("catalog", "catalog.create_product", "duplicate")
    headers = {**admin.headers, "Idempotency-Key": "create-blue-mug-0001"}
    body = new_product()

    first = await edge.post("/products", json=body, headers=headers)
    retried = await edge.post("/products", json=body, headers=headers)

    assert first.status_code == retried.status_code == 202
    assert first.json()["product_id"] == retried.json()["product_id"]
    assert first.json()["message_id"] == retried.json()["message_id"]
    sent = await command_tap.wait_for(count=2)
    assert sent[0].message_id == sent[1].message_id == first.json()["message_id"]
    await eventually(
        lambda: messages_taken("catalog", "catalog.create_product", "duplicate"),
        until=lambda now: now == duplicates + 1,
        what="the catalog to skip the repeated command",
    )
    listed = (await edge.get("/products")).json()
    assert [p["product_id"] for p in listed["items"]] == [first.json()["product_id"]]
