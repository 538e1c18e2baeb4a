"""Fixtures of the end-to-end tests: the real edge over uvicorn, on the test's vhost and databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from brokers.settings import Settings
from edge.app import create_app
from ops.payment_provider import served
from tests.e2e.orders_support import OpenShop, Shop
from tests.e2e.support import User, edge_settings, serving, sign_in_admin, sign_up
from tests.helpers import Tap

ServeEdge = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def serve_edge(settings: Settings) -> AsyncIterator[ServeEdge]:
    """Serve edges over the test's settings (with overrides); each call gives a client of a new one."""
    async with AsyncExitStack() as stack:

        async def serve(**overrides: object) -> httpx.AsyncClient:
            app = create_app(edge_settings(settings, **overrides))
            base_url = await stack.enter_async_context(serving(app))
            return await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=10.0))

        yield serve


@pytest.fixture
async def edge(serve_edge: ServeEdge) -> httpx.AsyncClient:
    return await serve_edge()


@pytest.fixture
async def command_tap(settings: Settings) -> AsyncIterator[Tap]:
    async with Tap.commands(settings.rabbitmq_url) as tap:
        yield tap


@pytest.fixture
async def identity(start_host) -> None:
    """The identity actor, which every signed-in request needs (the edge asks it for its keys)."""
    await start_host("identity")


@pytest.fixture
async def admin(identity, edge: httpx.AsyncClient, settings: Settings) -> User:
    return await sign_in_admin(edge, settings)


@pytest.fixture
async def ann(identity, edge: httpx.AsyncClient) -> User:
    return await sign_up(edge, "ann")


@pytest.fixture
async def bob(identity, edge: httpx.AsyncClient) -> User:
    return await sign_up(edge, "bob")


@pytest.fixture
async def open_shop(settings: Settings, start_host, serve_edge) -> AsyncIterator[OpenShop]:
    async with AsyncExitStack() as stack:

        async def open_(**overrides: Any) -> Shop:
            provider = await stack.enter_async_context(served())
            overrides = {
                "emporium_payment_provider_url": provider.url,
                "emporium_carrier_step_ms": 200,
                "emporium_order_deadline_ms": 20_000,
                **overrides,
            }
            # Every actor, identity included (the users of a test are signed up before it opens).
            await start_host(**overrides)
            edge = await serve_edge(**overrides)
            return Shop(edge, provider.control, edge_settings(settings, **overrides))

        yield open_
