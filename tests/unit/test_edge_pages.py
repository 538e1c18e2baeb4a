"""The edge's saga page: its own files only, a strict policy, and queue links in development only."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from brokers.settings import Settings
from edge.hardening import CSP, install_hardening
from edge.headers import PAGE_CSP
from edge.pages import SAGA_PAGE, install_pages, rabbitmq_queues_ui


def _client(settings: Settings) -> httpx.AsyncClient:
    app = FastAPI(docs_url=None)
    install_pages(app, settings)
    install_hardening(app, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge")


async def test_the_page_loads_its_script_and_styles_from_the_edge_under_a_policy_allowing_nothing_else():
    async with _client(Settings()) as client:
        page = await client.get(SAGA_PAGE)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers[CSP] == PAGE_CSP
        assert "'unsafe-inline'" not in PAGE_CSP and "http" not in PAGE_CSP
        assert "<script>" not in page.text and " style=" not in page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(assets) == ["pages/saga.css", "pages/saga.js"]
        for asset in assets:
            served = await client.get(f"/{asset}")
            assert served.status_code == 200 and served.content
        links = (await client.get(f"{SAGA_PAGE}/links")).json()
        assert links["publishers"]["stock.reserved"] == "inventory"
        assert links["publishers"]["order.delivered"] == "orders"


@pytest.mark.parametrize(
    ("rabbitmq_url", "vhost"),
    [
        ("amqp://u:p@rabbit:5672/", "%2F"),
        ("amqp://u:p@rabbit:5672", "%2F"),
        ("amqp://rabbit/t%2Fa b", "t%2Fa%20b"),
    ],
)
def test_queue_links_name_the_vhost_and_never_the_credentials(rabbitmq_url: str, vhost: str):
    settings = Settings(
        rabbitmq_url=rabbitmq_url, rabbitmq_management_url="http://admin:s3cret@mq.local:15672/"
    )
    assert rabbitmq_queues_ui(settings) == f"http://mq.local:15672/#/queues/{vhost}"


def test_production_pages_link_to_no_queue():
    settings = Settings.model_construct(
        **{**Settings().model_dump(), "emporium_env": "production"}  # no production secrets needed here
    )
    assert rabbitmq_queues_ui(settings) is None
