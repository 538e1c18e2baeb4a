"""Pages the edge serves to people: a customer's (or operator's) orders and their sagas, live.

Plain HTML, CSS and a little JavaScript shipped in the package (edge/pages/): no build step, nothing
from another origin. The page talks to the edge's own API with the bearer token it signs in for.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from brokers.contracts import OWNERS, events_of
from brokers.management import queues_ui
from brokers.settings import Settings

SAGA_PAGE = "/saga"
ASSETS_PATH = "/pages"


class SagaLinks(BaseModel):
    """Where the saga page may link each step to: the RabbitMQ UI's queues (development only), and
    the actor that publishes each event type (its work queue is named after it)."""

    rabbitmq_ui: str | None
    publishers: dict[str, str]


def rabbitmq_queues_ui(settings: Settings) -> str | None:
    """Development only: in production operators reach the UI their own way, and a page should not
    point at it."""
    return None if settings.emporium_env == "production" else queues_ui(settings)


def install_pages(app: FastAPI, settings: Settings) -> None:
    page = (resources.files("edge") / "pages" / "saga.html").read_text(encoding="utf-8")
    links = SagaLinks(
        rabbitmq_ui=rabbitmq_queues_ui(settings),
        publishers={event: owner for owner in OWNERS for event in events_of(owner)},
    )
    app.mount(ASSETS_PATH, StaticFiles(packages=[("edge", "pages")]), name="pages")

    @app.get(SAGA_PAGE, include_in_schema=False)
    async def saga_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(f"{SAGA_PAGE}/links", include_in_schema=False)
    async def saga_links() -> SagaLinks:
        return links
