"""The edge's probes, metrics and API documentation."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from brokers.settings import Settings
from edge.app import create_app
from tests.e2e.support import edge_settings, serving


async def test_health_and_ready_answer_when_rabbitmq_is_up(edge: httpx.AsyncClient) -> None:
    health = await edge.get("/health")
    ready = await edge.get("/ready")

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"rabbitmq": True}}


async def test_extra_checks_join_readiness(settings: Settings) -> None:
    async def always_down() -> bool:
        return False

    app = create_app(edge_settings(settings), extra_checks={"actors_mongodb": always_down})
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as edge:
        ready = await edge.get("/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"rabbitmq": True, "actors_mongodb": False}


async def test_an_edge_with_a_metrics_token_serves_metrics_only_to_its_bearer(settings: Settings) -> None:
    token = "scraper-" + "k" * 32
    app = create_app(edge_settings(settings, emporium_metrics_token=SecretStr(token)))
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as edge:
        anonymous = await edge.get("/metrics")
        guessed = await edge.get("/metrics", headers={"Authorization": "Bearer " + "k" * 40})
        scraper = await edge.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        health = await edge.get("/health")

    assert (anonymous.status_code, guessed.status_code) == (401, 401)
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert scraper.status_code == 200 and "emporium_edge_requests_total" in scraper.text
    assert health.status_code == 200


async def _requests_counted(edge: httpx.AsyncClient, **labels: str) -> float:
    text = (await edge.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "emporium_edge_requests_total" and sample.labels == labels:
                return sample.value
    return 0.0


async def test_requests_are_counted_by_route_template_and_status(edge: httpx.AsyncClient) -> None:
    labels = {"method": "GET", "route": "/products/{product_id}", "status": "503"}
    before = await _requests_counted(edge, **labels)

    # No catalog actor in this vhost: every read of a product is a 503.
    for product_id in ("p-1", "p-2", "p-3"):
        assert (await edge.get(f"/products/{product_id}")).status_code == 503
    metrics = await edge.get("/metrics")

    assert await _requests_counted(edge, **labels) == before + 3
    assert (
        'emporium_edge_request_duration_seconds_count{method="GET",route="/products/{product_id}",status="503"}'
        in (metrics.text)
    )
    assert "/products/p-1" not in metrics.text  # raw paths never become labels


async def test_every_response_carries_a_request_id(edge: httpx.AsyncClient) -> None:
    first, second = await edge.get("/health"), await edge.get("/health")

    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_the_api_is_documented(edge: httpx.AsyncClient) -> None:
    docs = await edge.get("/docs")
    spec = (await edge.get("/openapi.json")).json()

    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert spec["info"]["title"] == "emporium edge" and spec["info"]["version"]
    assert "Authorization: Bearer" in spec["info"]["description"]
    scheme = spec["components"]["securitySchemes"]["AccessToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    create = spec["paths"]["/products"]["post"]
    assert create["security"] == [{"AccessToken": []}]
    assert set(create["responses"]) == {"202", "401", "403", "413", "422", "429", "503"}
    assert create["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    }
    assert "ProblemDetails" in spec["components"]["schemas"]
    assert "FieldError" in spec["components"]["schemas"]
