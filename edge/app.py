"""The HTTP edge: turns requests into commands and queries for the actors, and nothing more.

The edge holds no data. A write is validated, sent as a command (persistent, confirmed by RabbitMQ)
and answered 202 with the ids to follow it by; a read asks the owning actor and waits for its answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Depends, FastAPI

from brokers.health import Check, probe_router
from brokers.settings import Settings, get_settings
from edge.auth import keyset_of_link
from edge.docs import install_docs
from edge.guard import IDEMPOTENCY_HEADER
from edge.hardening import install_hardening
from edge.limits import install_limits, limit_caller
from edge.link import RabbitLink
from edge.observe import REQUEST_ID_HEADER, ObserveRequests, trace_requests
from edge.pages import install_pages
from edge.pending import PendingOrders
from edge.prices import price_book_of_link
from edge.problems import install_problem_handlers, problem_responses
from edge.routes import admin, auth, catalog, deadletters, dev, inventory, orders
from edge.routes.shared import RouterOptions
from edge.subjects import subjects_of_link

DESCRIPTION = f"""
The HTTP edge of **emporium**, an e-commerce backend built as actors on RabbitMQ and MongoDB.

* **Writes** are accepted, not done: the edge sends a command to the actor that owns the data and
  answers `202 Accepted` once RabbitMQ has confirmed it, with the command's `message_id`, its
  `correlation_id` and a `Location` where the effect will be visible shortly.
* **Idempotent retries**: send an `{IDEMPOTENCY_HEADER}` header with a write. Repeating the write with
  the same key (same method and path) sends the same message id, and the actor applies it only once.
* **Reads** ask the owning actor and wait for its answer (`504` when none comes in time).
* **Errors** are RFC 9457 problems (`application/problem+json`): `type`, `title`, `status`, `detail`,
  `instance`, the `request_id` of the request, and `errors` listing the bad fields of an invalid request.
  `503` means RabbitMQ could not take the request (see `Retry-After`); its detail says whether a
  write's command may have been queued anyway, which is what retrying with the same
  `{IDEMPOTENCY_HEADER}` makes safe.
* **Orders** are placed with a required `{IDEMPOTENCY_HEADER}`: the same key and body give the same
  order id (the order is placed once), the same key with another body is refused (`409`). Every
  message of an order's saga carries the order id as its correlation id; follow it at
  `GET /orders/{{order_id}}/timeline` (everything known, from every actor at once) or live at
  `GET /orders/{{order_id}}/events` (Server-Sent Events). Right after the `202`, until the orders actor
  has applied it, `GET /orders/{{order_id}}` shows the order with status `accepted` (its lines, no
  prices yet), and it can be cancelled already.
* Every response carries `{REQUEST_ID_HEADER}`; it is the correlation id of the messages sent for it
  (except for an order's, which carry the order id).

**Accounts and tokens.** `POST /auth/register` makes a customer account; `POST /auth/login` answers
a short-lived access token (an EdDSA-signed JWT; `expires_in` says for how many seconds). Send it as
`Authorization: Bearer <token>`. There is no refresh token: log in again when it expires. Product and
stock browsing is public; orders are a signed-in user's own (someone else's order is a `404`, as if
it did not exist); catalog and stock changes, figures, dead letters and the `/dev` routes are for
administrators (`403` for others). Administrators are made by operators (`emporium admin create`),
never through this API. The keys that verify tokens are at `/.well-known/jwks.json`.
The `/dev` routes (simulator controls) do not exist in production.
"""

TAGS = [
    {"name": "auth", "description": "Registering, logging in, and the keys that verify access tokens."},
    {"name": "catalog", "description": "Products, categories and prices (the catalog actor)."},
    {"name": "inventory", "description": "Stock per SKU (the inventory actor)."},
    {
        "name": "orders",
        "description": "A customer's orders and their saga (orders, payments, shipping, notifications).",
    },
    {"name": "admin", "description": "Operators' figures (the analytics actor)."},
    {"name": "dev", "description": "Simulator controls for development and tests; absent in production."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics."},
]


def _version() -> str:
    try:
        return version("emporium")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


async def _asyncapi_document() -> dict[str, Any]:
    """The committed AsyncAPI document (``emporium asyncapi write``), shipped with the edge."""
    return _ASYNCAPI


_ASYNCAPI: dict[str, Any] = json.loads(resources.files("edge").joinpath("asyncapi.json").read_text())


def create_app(settings: Settings | None = None, *, extra_checks: dict[str, Check] | None = None) -> FastAPI:
    """The edge; ``extra_checks`` join its readiness (the all-in-one process adds its actors')."""
    settings = settings or get_settings()
    link = RabbitLink(settings)
    pending_orders = PendingOrders(keep_s=settings.emporium_order_deadline_ms / 1000)
    link.saga_events.observe(pending_orders.applied)
    price_book = price_book_of_link(link)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await link.open()
        price_book.start()
        try:
            yield
        finally:
            await price_book.stop()
            await link.close()

    app = FastAPI(
        title="emporium edge",
        summary="Products, stock and orders over HTTP, served by actors on RabbitMQ and MongoDB.",
        description=DESCRIPTION,
        version=_version(),
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # edge.docs serves the docs page without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.link = link
    app.state.pending_orders = pending_orders
    app.state.price_book = price_book
    app.state.keys = keyset_of_link(link)
    app.state.subjects = subjects_of_link(link)
    install_problem_handlers(app)
    install_docs(app)
    install_pages(app, settings)
    install_limits(app, settings)
    install_hardening(app, settings)
    # Last added, outermost: every answer, the hardening's refusals included, has a request id.
    app.add_middleware(ObserveRequests)
    trace_requests(app)
    app.include_router(probe_router({"rabbitmq": link.ready, **(extra_checks or {})}, settings))
    app.add_api_route(
        "/asyncapi.json",
        _asyncapi_document,
        methods=["GET"],
        tags=["operations"],
        summary="The AsyncAPI document of the actors' messages (generated from the contracts)",
    )
    # Every route but the probes spends from its caller's request budget, and so checks a token it
    # is sent, even where none is needed (401 when it is not valid).
    limited: RouterOptions = {
        "dependencies": [Depends(limit_caller)],
        "responses": problem_responses(401, 429),
    }
    api = (auth.router, auth.keys_router, catalog.router, inventory.router, orders.router, admin.router)
    for router in (*api, deadletters.router):
        app.include_router(router, **limited)
    if settings.emporium_env != "production":
        app.include_router(dev.router, **limited)
    return app
