"""The edge's saga page: its own files only, a strict policy, and queue links in development only."""

from __future__ import annotations

import re

import httpx
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


def test_pages_link_to_the_queues_in_development_only():
    where = {"rabbitmq_url": "amqp://u:p@mq:5672/shop", "rabbitmq_management_url": "http://u:p@mq:15672"}
    assert rabbitmq_queues_ui(Settings(**where)) == "http://mq:15672/#/queues/shop"
    settings = Settings.model_construct(  # no production secrets needed for this
        **{**Settings().model_dump(), **where, "emporium_env": "production"}
    )
    assert rabbitmq_queues_ui(settings) is None
