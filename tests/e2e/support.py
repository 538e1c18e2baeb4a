"""Serving the real edge in-process, and watching what it sends, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY

import brokers.contracts  # noqa: F401  (registers every contract, so the tap knows every command)
from brokers.settings import Settings
from edge.server import server_config
from ops.identity_admin import create_admin
from tests.helpers import eventually

PASSWORD = "Correct-horse-42"
# Far above what a test does: the limits are tested on their own, with budgets of their own.
GENEROUS_RATE_LIMIT = "100000/minute"
_STARTUP_S = 15.0
_SHUTDOWN_S = 20.0


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` as the edge command does, on an ephemeral loopback port; yield its base URL."""
    server = uvicorn.Server(
        server_config(
            app,
            app.state.settings,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_config=None,
            log_level="warning",
        )
    )

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when the lifespan fails: not in tests
            raise RuntimeError("the edge failed to start (see the log)") from exc

    task = asyncio.create_task(serve())

    async def started() -> bool:
        if task.done():
            raise AssertionError(f"the edge stopped while starting: {task.exception()!r}")
        return server.started

    try:
        await eventually(started, timeout=_STARTUP_S, what="the edge to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _SHUTDOWN_S)


def edge_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test's settings for an edge: generous rate limits, /metrics rendered afresh, any overrides."""
    generous = {
        "emporium_rate_limit": GENEROUS_RATE_LIMIT,
        "emporium_login_rate_limit": GENEROUS_RATE_LIMIT,
        # Tests read a counter, act, and read it again: a page kept for 2 s would show the first.
        "emporium_metrics_max_age_s": 0.0,
    }
    return settings.model_copy(update={**generous, **overrides})


@dataclass(frozen=True)
class User:
    """A signed-in user of the edge: who, and the headers that say so."""

    user_id: str
    email: str
    headers: dict[str, str]

    def with_headers(self, **more: str) -> dict[str, str]:
        return {**self.headers, **more}


def from_address(edge: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    """A client of the same edge whose connections come from another loopback ``address`` (127.x.y.z):
    another client address to the edge's limits. The caller closes it."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=edge.base_url, transport=transport, timeout=edge.timeout)


async def log_in(edge: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = await edge.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def sign_up(edge: httpx.AsyncClient, name: str) -> User:
    """Register a customer through the edge (waiting for identity to have it) and log in."""
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    response = await edge.post("/auth/register", json={"email": email, "name": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return User(response.json()["user_id"], email, await log_in(edge, email))


async def sign_in_admin(edge: httpx.AsyncClient, settings: Settings) -> User:
    """An administrator, made the only way there is (the operators' tool), then logged in."""
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    admin = await create_admin(settings, email, PASSWORD, name="Root")
    return User(admin.user_id, email, await log_in(edge, email))


class RabbitDoor:
    """A loopback port that refuses connections until opened, then forwards them to RabbitMQ.

    The port is bound from the start (refusing, since nothing listens), so nobody else can take it.
    """

    def __init__(self, rabbitmq_url: str) -> None:
        self._rabbitmq = urlsplit(rabbitmq_url)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        """The RabbitMQ URL, through this door."""
        port = self._socket.getsockname()[1]
        credentials, at, _ = self._rabbitmq.netloc.rpartition("@")
        return urlunsplit(self._rabbitmq._replace(netloc=f"{credentials}{at}127.0.0.1:{port}"))

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, sock=self._socket)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        rabbit_reader, rabbit_writer = await asyncio.open_connection(
            self._rabbitmq.hostname, self._rabbitmq.port or 5672
        )
        await asyncio.gather(
            self._pump(client_reader, rabbit_writer), self._pump(rabbit_reader, client_writer)
        )

    def stall(self) -> None:
        """Hold every byte in the door (both ways) until ``flow``: RabbitMQ seems to hang."""
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> RabbitDoor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is None:
            self._socket.close()
            return
        self._server.close()
        await self._server.wait_closed()


def new_product(**fields: Any) -> dict[str, Any]:
    """A valid POST /products body with a fresh SKU."""
    return {
        "sku": f"SKU-{uuid.uuid4().hex[:10].upper()}",
        "name": "Blue mug",
        "description": "350 ml, stoneware",
        "category": "kitchen",
        "price_cents": 1299,
        **fields,
    }


async def create_product(client: httpx.AsyncClient, admin: User, **fields: Any) -> dict[str, Any]:
    """POST a product (as ``admin``) and wait until the catalog serves it; its view."""
    response = await client.post("/products", json=new_product(**fields), headers=admin.headers)
    assert response.status_code == 202, response.text
    return await wait_for_json(client, response.headers["Location"])


async def wait_for_json(client: httpx.AsyncClient, path: str, until: Any = lambda body: True) -> Any:
    """Poll a GET until it answers 200 with a body that satisfies ``until``; that body."""

    async def fetch() -> httpx.Response:
        return await client.get(path)

    response = await eventually(
        fetch, until=lambda r: r.status_code == 200 and until(r.json()), what=f"GET {path}"
    )
    return response.json()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with that status; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["instance"] == response.request.url.path
    assert problem["title"] and problem["detail"] and problem["type"]
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return problem


def assert_unauthenticated(response: httpx.Response) -> dict[str, Any]:
    """The response is a 401 problem challenging the client for a bearer token; its body."""
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith('Bearer realm="emporium"')
    return problem


async def messages_taken(actor: str, type_: str, outcome: str) -> float:
    """How many messages of a type an actor of this process took off its queue with that outcome."""
    labels = {"actor": actor, "type": type_, "outcome": outcome}
    return REGISTRY.get_sample_value("emporium_messages_total", labels) or 0.0
