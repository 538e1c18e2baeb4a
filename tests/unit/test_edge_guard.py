"""Who may write, and the message identity of write requests."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request

from brokers.settings import Settings
from edge.app import create_app
from edge.guard import WriteIdentity, idempotent_id, write_identity
from tests.unit.edge_tokens import Mint, offline_edge

MINT = Mint()


def admin() -> dict[str, str]:
    """Minted per test: a token lives 15 minutes, the whole suite longer."""
    return MINT.headers("root", "admin")


VALID_PRODUCT = {"sku": "MUG-1", "name": "Mug", "category": "kitchen", "price_cents": 100}


@pytest.fixture
async def edge() -> AsyncIterator[httpx.AsyncClient]:
    """The real edge, never connected to RabbitMQ (its lifespan is not run): nothing can be sent."""
    app = offline_edge(MINT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge") as client:
        yield client


def _request(method: str, path: str) -> Request:
    return Request({"type": "http", "method": method, "path": path, "headers": [], "query_string": b""})


async def test_an_idempotency_key_gives_the_same_message_id_for_the_same_method_and_path() -> None:
    first = await write_identity(_request("POST", "/inventory/MUG-1/restock"), "key-00000001")
    again = await write_identity(_request("POST", "/inventory/MUG-1/restock"), "key-00000001")

    assert first.message_id == again.message_id
    assert first.idempotent
    assert len(first.message_id) == 32 and int(first.message_id, 16) >= 0


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("POST", "/inventory/MUG-2/restock", "key-00000001"),  # another SKU
        ("PATCH", "/products/p-1", "key-00000001"),  # another route
        ("POST", "/inventory/MUG-1/restock", "key-00000002"),  # another key
    ],
)
async def test_any_other_method_path_or_key_gives_another_message_id(
    method: str, path: str, key: str
) -> None:
    reference = await write_identity(_request("POST", "/inventory/MUG-1/restock"), "key-00000001")

    assert (await write_identity(_request(method, path), key)).message_id != reference.message_id


async def test_without_a_key_every_write_gets_a_fresh_message_id() -> None:
    first = await write_identity(_request("POST", "/products"), None)
    second = await write_identity(_request("POST", "/products"), None)

    assert first.message_id != second.message_id
    assert not first.idempotent


async def test_the_correlation_id_is_the_request_id() -> None:
    request = _request("POST", "/products")
    request.scope["state"] = {"request_id": "req-1"}

    assert (await write_identity(request, "key-00000001")).correlation_id == "req-1"


def test_what_an_idempotent_write_creates_keeps_its_id_across_retries() -> None:
    write = WriteIdentity(
        message_id=idempotent_id("POST /products", "key-00000001"), correlation_id="c", idempotent=True
    )
    retried = WriteIdentity(write.message_id, correlation_id="another request", idempotent=True)

    assert write.new_entity_id("product") == retried.new_entity_id("product")
    assert write.new_entity_id("product") != write.new_entity_id("order")
    assert write.new_entity_id("product") != write.message_id


def test_what_a_plain_write_creates_gets_a_fresh_id() -> None:
    write = WriteIdentity(message_id="m-1", correlation_id="c")

    assert write.new_entity_id("product") != write.new_entity_id("product")


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Basic cm9vdDpyb290"}])
async def test_a_write_without_a_bearer_token_is_refused_before_its_body_is_read(
    edge: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await edge.post("/products", json={"nonsense": True}, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_customer_may_not_write_the_catalog(edge: httpx.AsyncClient) -> None:
    response = await edge.post("/products", json=VALID_PRODUCT, headers=MINT.headers("ann", "customer"))

    assert response.status_code == 403
    assert response.json()["detail"] == "this route is for administrators"


async def test_reads_need_no_token(edge: httpx.AsyncClient) -> None:
    # Not connected: the read gets as far as RabbitMQ, which is what 503 says.
    assert (await edge.get("/products")).status_code == 503


async def test_an_admin_write_gets_as_far_as_rabbitmq(edge: httpx.AsyncClient) -> None:
    response = await edge.post("/products", json=VALID_PRODUCT, headers=admin())

    assert response.status_code == 503
    assert response.json()["type"] == "urn:emporium:problem:broker-unavailable"


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("short", "at least 8 characters"),
        ("k" * 129, "at most 128 characters"),
        ("has spaces in it", "should match pattern"),
        ("ünïcödé-key".encode(), "should match pattern"),
    ],
)
async def test_a_malformed_idempotency_key_is_an_invalid_request(
    edge: httpx.AsyncClient, key: str | bytes, complaint: str
) -> None:
    response = await edge.post("/products", json=VALID_PRODUCT, headers={**admin(), "Idempotency-Key": key})

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["location"] == "header.Idempotency-Key"
    assert complaint in error["message"]


def test_every_dependency_and_endpoint_of_the_edge_runs_on_the_event_loop() -> None:
    # FastAPI runs a plain function in its thread pool: a hop to a thread and back on every request.
    app = create_app(Settings())
    in_thread_pool: set[str] = set()

    def visit(dependant: Dependant) -> None:
        for dependency in dependant.dependencies:
            call = dependency.call
            if call is not None and not _on_the_loop(call):
                in_thread_pool.add(getattr(call, "__qualname__", repr(call)))
            visit(dependency)

    for route in app.routes:
        if isinstance(route, APIRoute):
            if not _on_the_loop(route.endpoint):
                in_thread_pool.add(route.endpoint.__qualname__)
            visit(route.dependant)

    assert in_thread_pool == set()


def _on_the_loop(call: Any) -> bool:
    """A coroutine or async generator function (or an object whose __call__ is one)."""
    for candidate in (call, getattr(call, "__call__", None)):  # noqa: B004
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False
