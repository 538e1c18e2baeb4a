"""The probes every process serves: /metrics rendered off the event loop, shared, and guarded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from brokers.health import probe_router
from brokers.settings import Settings
from tests.helpers import eventually

TOKEN = "a-metrics-token-of-thirty-two-chars-or-more"


class StallingCollector:
    """A collector that counts its renderings and holds each until ``go_on`` is set."""

    def __init__(self) -> None:
        self.renderings = 0
        self.go_on = threading.Event()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.renderings += 1
        self.go_on.wait(timeout=10)
        yield GaugeMetricFamily("emporium_test_stalling", "A test's collector", value=1)

    async def rendering(self) -> bool:
        return self.renderings == 1


@pytest.fixture
def stalling() -> Iterator[StallingCollector]:
    collector = StallingCollector()
    REGISTRY.register(collector)
    try:
        yield collector
    finally:
        collector.go_on.set()
        REGISTRY.unregister(collector)


async def _client(**settings: object) -> httpx.AsyncClient:
    api = FastAPI()
    api.include_router(probe_router({}, Settings(**settings)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://probe")


@pytest.fixture
async def probes() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client() as client:
        yield client


async def test_health_answers_while_metrics_are_being_rendered(probes, stalling):
    scrape = asyncio.create_task(probes.get("/metrics"))
    await eventually(stalling.rendering, timeout=5, what="the rendering to start")
    health = await asyncio.wait_for(probes.get("/health"), 5)
    assert health.status_code == 200
    assert not scrape.done(), "the rendering held the event loop: /health waited for it"
    stalling.go_on.set()
    assert "emporium_test_stalling 1.0" in (await scrape).text


async def test_scrapers_at_once_share_one_rendering(probes, stalling):
    scrapes = [asyncio.create_task(probes.get("/metrics")) for _ in range(20)]
    await eventually(stalling.rendering, timeout=5, what="the rendering to start")
    stalling.go_on.set()
    pages = {(await scrape).text for scrape in scrapes}
    assert len(pages) == 1
    await probes.get("/metrics")  # within the page's age: served again
    assert stalling.renderings == 1


async def test_a_page_older_than_its_age_is_rendered_again(stalling):
    stalling.go_on.set()
    async with await _client(emporium_metrics_max_age_s=0) as probes:
        await probes.get("/metrics")
        await probes.get("/metrics")
    assert stalling.renderings == 2


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        ("Bearer " + "é" * 40).encode(),
        "Bearer " + "a" * 10_000,
        f"{TOKEN}",
    ],
)
async def test_with_a_token_set_metrics_refuse_a_request_without_it(authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    async with await _client(emporium_metrics_token=TOKEN) as probes:
        answer = await probes.get("/metrics", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "EMPORIUM_METRICS_TOKEN" in answer.json()["detail"]
    assert TOKEN not in answer.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_with_a_token_set_metrics_answer_a_request_bearing_it(scheme):
    async with await _client(emporium_metrics_token=TOKEN) as probes:
        answer = await probes.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
        health = await probes.get("/health")
    assert answer.status_code == 200
    assert "# TYPE" in answer.text
    assert health.status_code == 200  # the probes the orchestrator asks stay open


def test_a_short_metrics_token_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        Settings(emporium_metrics_token="short")
