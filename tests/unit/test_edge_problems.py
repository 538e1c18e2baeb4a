"""Every failure the edge answers becomes an RFC 9457 problem with a useful detail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from structlog.testing import capture_logs

from brokers.rpc import BrokerUnavailable, Problem, QueryFailed, QueryTimeout
from edge.observe import ObserveRequests
from edge.problems import PROBLEM_JSON, install_problem_handlers, problem_responses


class Order(BaseModel):
    quantity: int = Field(ge=1)
    sku: str = Field(pattern=r"^[A-Z]+$")


def _failing_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(ObserveRequests)
    failures = {
        "actor-problem": QueryFailed(Problem.of(409, "product p-1 already exists")),
        "timeout": QueryTimeout("no reply to catalog.get_product within 0.5s"),
        "broker": BrokerUnavailable("RabbitMQ is unreachable"),
        "forbidden": HTTPException(403, "not yours"),
        "bug": RuntimeError("password=hunter2 in a stack frame"),
    }

    @app.get("/fail/{kind}")
    async def fail(kind: str) -> None:
        raise failures[kind]

    @app.post("/orders")
    async def order(body: Order) -> Order:
        return body

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The unexpected-error case re-raises after answering (Starlette's design): read the answer.
    transport = httpx.ASGITransport(_failing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield client


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    ("kind", "status", "type_", "title", "detail_part"),
    [
        ("actor-problem", 409, "about:blank", "Conflict", "product p-1 already exists"),
        ("timeout", 504, "urn:emporium:problem:query-timeout", "No answer in time", "within 0.5s"),
        ("broker", 503, "urn:emporium:problem:broker-unavailable", "Messaging is unavailable", "unreachable"),
        ("forbidden", 403, "about:blank", "Forbidden", "not yours"),
    ],
)
async def test_known_failures_become_problems(
    client: httpx.AsyncClient, kind: str, status: int, type_: str, title: str, detail_part: str
) -> None:
    problem = _problem(await client.get(f"/fail/{kind}"), status)

    assert problem["type"] == type_
    assert problem["title"] == title
    assert detail_part in problem["detail"]
    assert "errors" not in problem


async def test_rabbitmq_unavailable_says_when_to_retry(client: httpx.AsyncClient) -> None:
    response = await client.get("/fail/broker")

    assert response.headers["retry-after"] == "5"


async def test_an_unexpected_error_is_a_generic_500_and_is_logged(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        response = await client.get("/fail/bug")

    problem = _problem(response, 500)
    assert problem["title"] == "Internal Server Error"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    [logged] = [entry for entry in logs if entry["event"] == "edge.unexpected_error"]
    assert logged["log_level"] == "error"
    assert isinstance(logged["exc_info"], RuntimeError)
    assert logged["path"] == "/fail/bug"


async def test_an_invalid_request_lists_every_bad_field(client: httpx.AsyncClient) -> None:
    problem = _problem(await client.post("/orders", json={"quantity": 0, "sku": "abc", "extra": 1}), 422)

    assert problem["type"] == "urn:emporium:problem:invalid-request"
    locations = [error["location"] for error in problem["errors"]]
    assert locations == ["body.quantity", "body.sku"]
    assert problem["detail"].startswith(
        "2 invalid fields: body.quantity: Input should be greater than or equal to 1"
    )
    assert "body.sku" in problem["detail"]


async def test_a_body_that_is_not_json_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders", content=b"{not json", headers={"content-type": "application/json"}
    )

    problem = _problem(response, 422)
    assert problem["detail"].startswith("1 invalid field: body")
    assert "JSON" in problem["detail"]


async def test_starlettes_own_404_says_what_was_asked(client: httpx.AsyncClient) -> None:
    problem = _problem(await client.get("/nowhere"), 404)

    assert problem["detail"] == "GET /nowhere: Not Found"


def test_documented_problems_are_problem_json_only() -> None:
    documented = problem_responses(404, 503)

    assert set(documented) == {404, 503}
    assert documented[503]["description"] == "Service Unavailable"
    assert list(documented[404]["content"]) == [PROBLEM_JSON]
