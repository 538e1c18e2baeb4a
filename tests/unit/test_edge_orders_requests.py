"""Order requests at the edge: who asks, which order a key names, and what is refused before sending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from edge.routes.orders import NewOrder, order_id_for
from tests.unit.edge_tokens import Mint, offline_edge

MINT = Mint()


def ann() -> dict[str, str]:
    """Minted per test: a token lives 15 minutes, the whole suite longer."""
    return MINT.headers("ann", "customer")


KEY = {"Idempotency-Key": "order-key-0001"}
LINES = {"lines": [{"sku": "MUG-1", "quantity": 2}]}


@pytest.fixture
async def edge() -> AsyncIterator[httpx.AsyncClient]:
    """The real edge, never connected to RabbitMQ (its lifespan is not run): nothing can be sent."""
    app = offline_edge(MINT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge") as client:
        yield client


def test_a_customer_and_key_name_one_order_and_no_one_elses() -> None:
    order_id = order_id_for("ann", "order-key-0001")

    assert order_id == order_id_for("ann", "order-key-0001")
    assert order_id != order_id_for("bob", "order-key-0001")
    assert order_id != order_id_for("ann", "order-key-0002")
    assert len(order_id) == 32 and int(order_id, 16) >= 0


def test_the_digest_is_the_same_for_the_same_lines_however_they_are_spelled() -> None:
    spelled = [
        '{"lines": [{"sku": "MUG-1", "quantity": 2}]}',
        '{ "lines" : [ { "quantity" : 2, "sku" : "MUG-1" } ] }',
        '{"lines":[{"sku":"MUG-1","quantity":1},{"sku":"MUG-1","quantity":1}]}',
    ]

    digests = {NewOrder.model_validate_json(body).digest() for body in spelled}

    assert len(digests) == 1
    assert len(digests.pop()) == 64


@pytest.mark.parametrize("quantity", ["2", 2.0, 2.5, True, None, [2], {"$gt": 0}])
def test_a_quantity_that_is_not_a_json_integer_is_refused_not_converted(quantity: object) -> None:
    # FastAPI validates the parsed JSON in Python mode, as here.
    with pytest.raises(ValidationError):
        NewOrder.model_validate({"lines": [{"sku": "MUG-1", "quantity": quantity}]})


@pytest.mark.parametrize(
    "lines",
    [
        [{"sku": "MUG-1", "quantity": 3}],
        [{"sku": "MUG-2", "quantity": 2}],
        [{"sku": "MUG-1", "quantity": 2}, {"sku": "MUG-2", "quantity": 1}],
    ],
)
def test_other_lines_have_another_digest(lines: list[dict[str, Any]]) -> None:
    assert NewOrder.model_validate({"lines": lines}).digest() != NewOrder.model_validate(LINES).digest()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"lines": []}, ("lines",)),
        ({"lines": [{"sku": "MUG-1", "quantity": 1}] * 101}, ("lines",)),
        ({"lines": [{"sku": "mug-1", "quantity": 1}]}, ("lines", 0, "sku")),
        ({"lines": [{"sku": "MUG-1", "quantity": 0}]}, ("lines", 0, "quantity")),
        ({"lines": [{"sku": "MUG-1", "quantity": 1, "price_cents": 1}]}, ("lines", 0, "price_cents")),
        ({**LINES, "customer_id": "bob"}, ("customer_id",)),
        ({}, ("lines",)),
        ({"lines": [{"sku": "MUG-1", "quantity": 600_000}] * 2}, ("lines",)),
    ],
)
def test_an_invalid_order_is_refused_naming_the_field(body: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as refused:
        NewOrder.model_validate(body)

    assert where in [error["loc"] for error in refused.value.errors()]


@pytest.mark.parametrize(
    ("headers", "complaint"),
    [
        (KEY, "this route needs an access token"),
        ({**KEY, "Authorization": "Bearer not-a-jwt"}, "the access token is not a JWT"),
        (
            {**KEY, "Authorization": f"Bearer {Mint().token()}"},
            "the access token is signed by a key identity does not publish",
        ),
    ],
)
async def test_an_order_without_a_valid_token_is_a_401_before_its_body_is_read(
    edge: httpx.AsyncClient, headers: dict[str, str], complaint: str
) -> None:
    response = await edge.post("/orders", json={"nonsense": True}, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(complaint)


@pytest.mark.parametrize("key", [None, "short", "has spaces in it"])
async def test_an_order_needs_a_well_formed_idempotency_key(edge: httpx.AsyncClient, key: str | None) -> None:
    headers = ann() if key is None else {**ann(), "Idempotency-Key": key}

    response = await edge.post("/orders", json=LINES, headers=headers)

    assert response.status_code == 422
    assert [e["location"] for e in response.json()["errors"]] == ["header.Idempotency-Key"]


async def test_a_valid_order_gets_as_far_as_rabbitmq(edge: httpx.AsyncClient) -> None:
    response = await edge.post("/orders", json=LINES, headers={**ann(), **KEY})

    assert response.status_code == 503
    assert response.json()["type"] == "urn:emporium:problem:broker-unavailable"


@pytest.mark.parametrize("path", ["/orders", "/orders/o-1", "/orders/o-1/timeline", "/orders/o-1/events"])
async def test_every_order_read_needs_a_customer(edge: httpx.AsyncClient, path: str) -> None:
    assert (await edge.get(path)).status_code == 401
    assert (await edge.get(path, headers=ann())).status_code == 503  # then it gets as far as RabbitMQ


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"limit": 0}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"customer_id": "bob"}, "query.customer_id"),
    ],
)
async def test_listing_my_orders_takes_only_a_page(
    edge: httpx.AsyncClient, params: dict[str, Any], where: str
) -> None:
    response = await edge.get("/orders", params=params, headers=ann())

    assert response.status_code == 422
    assert [e["location"] for e in response.json()["errors"]] == [where]


async def test_admin_and_dev_routes_are_for_administrators(edge: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/admin/stats"),
        ("GET", "/dev/payment-provider"),
        ("POST", "/dev/shipments/o-1/advance"),
    ]:
        assert (await edge.request(method, path)).status_code == 401
        assert (await edge.request(method, path, headers=ann())).status_code == 403
    assert (await edge.get("/admin/stats", headers=MINT.headers("root", "admin"))).status_code == 503


async def test_the_bearer_token_is_documented(edge: httpx.AsyncClient) -> None:
    spec = (await edge.get("/openapi.json")).json()

    scheme = spec["components"]["securitySchemes"]["AccessToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert spec["paths"]["/orders"]["post"]["security"] == [{"AccessToken": []}]
    for public in (("/products", "get"), ("/auth/login", "post"), ("/inventory/{sku}", "get")):
        assert "security" not in spec["paths"][public[0]][public[1]], public
    assert (
        "text/event-stream"
        in spec["paths"]["/orders/{order_id}/events"]["get"]["responses"]["200"]["content"]
    )


async def test_every_route_that_takes_a_body_documents_the_size_limit(edge: httpx.AsyncClient) -> None:
    spec = (await edge.get("/openapi.json")).json()

    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    with_body = {(path, method) for path, method, op in operations if "requestBody" in op}
    limited = {(path, method) for path, method, op in operations if "413" in op["responses"]}
    assert ("/dev/payment-provider", "put") in with_body
    assert limited == with_body


def test_lines_of_one_sku_are_added_up_into_one() -> None:
    order = NewOrder.model_validate(
        {
            "lines": [
                {"sku": "MUG-1", "quantity": 2},
                {"sku": "MUG-2", "quantity": 1},
                {"sku": "MUG-1", "quantity": 3},
            ]
        }
    )

    assert [(line.sku, line.quantity) for line in order.lines] == [("MUG-1", 5), ("MUG-2", 1)]


def test_lines_adding_up_past_the_largest_quantity_are_refused_saying_so() -> None:
    with pytest.raises(ValidationError, match="the lines of SKU MUG-1 add up to 1200000, above 1000000"):
        NewOrder.model_validate({"lines": [{"sku": "MUG-1", "quantity": 600_000}] * 2})
