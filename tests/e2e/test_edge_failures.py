"""What the edge answers when a request is refused or the system behind it cannot serve it."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import httpx
import pytest

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.settings import Settings
from brokers.topology import declare, dlq_name
from edge.app import create_app
from tests.e2e.support import (
    RabbitDoor,
    User,
    assert_problem,
    assert_unauthenticated,
    edge_settings,
    new_product,
    serving,
    wait_for_json,
)
from tests.helpers import Tap, eventually

BAD_KEY = {"Idempotency-Key": "short"}
# (method, path, request keyword arguments, where the problem must point: that field, or inside it)
INVALID_WRITES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/products", {"json": {**new_product(), "sku": "lower-case"}}, "body.sku"),
    ("POST", "/products", {"json": {k: v for k, v in new_product().items() if k != "name"}}, "body.name"),
    ("POST", "/products", {"json": {**new_product(), "name": "   "}}, "body.name"),
    ("POST", "/products", {"json": {**new_product(), "price_cents": -1}}, "body.price_cents"),
    ("POST", "/products", {"json": {**new_product(), "currency": "euro"}}, "body.currency"),
    ("POST", "/products", {"json": {**new_product(), "product_id": "mine"}}, "body.product_id"),
    ("POST", "/products", {"content": b'{"sku": ', "headers": {"content-type": "application/json"}}, "body"),
    ("POST", "/products", {"json": new_product(), "headers": BAD_KEY}, "header.Idempotency-Key"),
    ("PATCH", "/products/p-1", {"json": {}}, "body"),
    ("PATCH", "/products/p-1", {"json": {"name": "x" * 201}}, "body.name"),
    ("PATCH", "/products/not$an-id", {"json": {"name": "Mug"}}, "path.product_id"),
    ("PATCH", "/products/p-1/price", {"json": {"price_cents": "cheap"}}, "body.price_cents"),
    ("POST", "/inventory/SKU-1/restock", {"json": {"quantity": 0}}, "body.quantity"),
    ("POST", "/inventory/sku-1/restock", {"json": {"quantity": 1}}, "path.sku"),
]


INVALID_READS: list[tuple[str, dict[str, Any], str]] = [
    ("/products", {"limit": 0}, "query.limit"),
    ("/products", {"limit": 101}, "query.limit"),
    ("/products", {"offset": -1}, "query.offset"),
    ("/products", {"category": ""}, "query.category"),
    ("/products", {"colour": "blue"}, "query.colour"),
    ("/products/a%20b", {}, "path.product_id"),
    ("/inventory/lower-case", {}, "path.sku"),
]


async def _send(
    client: httpx.AsyncClient, admin: User, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    headers = admin.with_headers(**kwargs.pop("headers", {}))
    return await client.request(method, path, headers=headers, **kwargs)


async def _queued(settings: Settings, queue: str) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        return declared.declaration_result.message_count


async def test_refused_writes_send_nothing_and_change_nothing(
    start_host, settings: Settings, edge: httpx.AsyncClient, admin: User, ann: User, command_tap: Tap
) -> None:
    await start_host("catalog")
    anns_token = ann.headers["Authorization"].removeprefix("Bearer ")
    unauthenticated = [
        await edge.post("/products", json=new_product()),
        await edge.post("/products", json=new_product(), headers={"Authorization": "Bearer not-a-token"}),
        await edge.post("/products", json=new_product(), headers={"Authorization": anns_token}),
        await edge.patch("/products/p-1/price", json={"price_cents": 1}),
        await edge.post("/inventory/SKU-1/restock", json={"quantity": 1}),
    ]
    forbidden = [
        await edge.post("/products", json=new_product(), headers=ann.headers),
        await edge.patch("/products/p-1/price", json={"price_cents": 1}, headers=ann.headers),
        await edge.post("/inventory/SKU-1/restock", json={"quantity": 1}, headers=ann.headers),
    ]
    invalid = [
        (await _send(edge, admin, method, path, **kwargs), where)
        for method, path, kwargs, where in INVALID_WRITES
    ]

    for response in unauthenticated:
        assert_unauthenticated(response)
    for response in forbidden:
        assert "administrators" in assert_problem(response, 403)["detail"]
    for response, where in invalid:
        problem = assert_problem(response, 422)
        assert problem["type"] == "urn:emporium:problem:invalid-request"
        locations = [error["location"] for error in problem["errors"]]
        assert any(at == where or at.startswith(f"{where}.") for at in locations), problem
        assert where in problem["detail"]
    # Each request above finished before the next began: a command any of them had sent would reach
    # the tap before this marker (the users were made before the tap opened: see the fixtures' order).
    marker = await edge.post("/products", json=new_product(), headers=admin.headers)
    assert marker.status_code == 202
    sent = await command_tap.wait_for(count=1)
    assert [m.message_id for m in sent] == [marker.json()["message_id"]]
    listed = await wait_for_json(edge, "/products", until=lambda page: page["items"])
    assert [p["product_id"] for p in listed["items"]] == [marker.json()["product_id"]]
    assert await _queued(settings, dlq_name("catalog")) == 0


@pytest.mark.parametrize(("path", "params", "where"), INVALID_READS)
async def test_an_invalid_read_is_a_422_problem_naming_the_field(
    edge: httpx.AsyncClient, path: str, params: dict[str, Any], where: str
) -> None:
    problem = assert_problem(await edge.get(path, params=params), 422)

    assert [error["location"] for error in problem["errors"]] == [where]


async def test_a_query_nobody_takes_in_time_is_a_504_after_the_timeout(
    settings: Settings, broker, serve_edge
) -> None:
    # The catalog's queues exist, but no catalog actor consumes them.
    await declare(broker, topology_of(ACTORS["catalog"], settings))
    edge = await serve_edge(emporium_query_timeout_s=0.5)

    started = time.monotonic()
    response = await edge.get("/products/p-1")
    waited = time.monotonic() - started

    problem = assert_problem(response, 504)
    assert problem["type"] == "urn:emporium:problem:query-timeout"
    assert "catalog.get_product" in problem["detail"]
    assert 0.5 <= waited < 2.5


async def test_without_the_actor_deployed_reads_and_writes_are_503(
    edge: httpx.AsyncClient, admin: User
) -> None:
    read = assert_problem(await edge.get("/products"), 503)
    write = await edge.post("/products", json=new_product(), headers=admin.headers)

    assert "catalog.list_products" in read["detail"]
    assert assert_problem(write, 503)["detail"] == (
        "no queue takes catalog.create_product (the actor that handles it is not deployed); "
        "nothing was queued"
    )
    assert write.headers["retry-after"] == "5"


async def test_with_rabbitmq_unreachable_the_edge_starts_not_ready_and_answers_503(
    settings: Settings, admin: User
) -> None:
    async with (
        RabbitDoor(settings.rabbitmq_url) as closed,
        serving(create_app(edge_settings(settings, rabbitmq_url=closed.url))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10.0) as edge,
    ):
        health = await edge.get("/health")
        ready = await edge.get("/ready")
        read = await edge.get("/products")
        write = await edge.post("/products", json=new_product(), headers=admin.headers)
        metrics = await edge.get("/metrics")

    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json()["checks"] == {"rabbitmq": False}
    read_problem, write_problem = assert_problem(read, 503), assert_problem(write, 503)
    assert read_problem["type"] == write_problem["type"] == "urn:emporium:problem:broker-unavailable"
    assert read_problem["detail"] == "RabbitMQ is unreachable (the edge keeps reconnecting); nothing was sent"
    # The write stops sooner: its token cannot be verified without identity's keys, asked over RabbitMQ.
    assert "cannot verify access tokens" in write_problem["detail"]
    assert metrics.status_code == 200


async def test_the_edge_connects_once_rabbitmq_answers(
    settings: Settings, admin: User, command_tap: Tap
) -> None:
    async with (
        RabbitDoor(settings.rabbitmq_url) as door,
        serving(create_app(edge_settings(settings, rabbitmq_url=door.url))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10.0) as edge,
    ):
        assert (await edge.get("/ready")).status_code == 503

        await door.open()

        await eventually(
            lambda: edge.get("/ready"), until=lambda r: r.status_code == 200, what="the edge to connect"
        )
        write = await edge.post("/products", json=new_product(), headers=admin.headers)
        assert write.status_code == 202, write.text
        assert [m.message_id for m in await command_tap.wait_for(count=1)] == [write.json()["message_id"]]


@pytest.mark.parametrize("path", ["/nowhere", "/products/p-1/colour"])
async def test_an_unknown_route_is_a_404_problem(edge: httpx.AsyncClient, path: str) -> None:
    problem = assert_problem(await edge.get(path), 404)

    assert path in problem["detail"]


async def test_a_wrong_method_is_a_405_problem(edge: httpx.AsyncClient, admin: User) -> None:
    response = await edge.delete("/products/p-1", headers=admin.headers)

    assert "DELETE" in assert_problem(response, 405)["detail"]
    assert "allow" in response.headers  # kept from Starlette's own answer


async def test_a_write_rabbitmq_does_not_confirm_in_time_is_a_503_not_a_202(
    settings: Settings, admin: User, command_tap: Tap
) -> None:
    async with (
        RabbitDoor(settings.rabbitmq_url) as door,
        serving(
            create_app(edge_settings(settings, rabbitmq_url=door.url, emporium_query_timeout_s=0.5))
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10.0) as edge,
    ):
        await door.open()
        await eventually(
            lambda: edge.get("/ready"), until=lambda r: r.status_code == 200, what="the edge to connect"
        )
        # The edge learns identity's keys while RabbitMQ still answers: the write's token needs no query.
        assert (await edge.get("/auth/me", headers=admin.headers)).status_code == 200
        door.stall()

        write = await edge.post("/products", json=new_product(), headers=admin.headers)

        assert "it may or may not be queued" in assert_problem(write, 503)["detail"]
        door.flow()
        # It was queued after all, only too late to say so: why retries carry an Idempotency-Key.
        await command_tap.wait_for(count=1)
