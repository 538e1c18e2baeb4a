"""Fixtures on the real servers: every test gets its own RabbitMQ vhost and its own databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from pymongo import AsyncMongoClient

from actors.registry import ACTORS
from actors.runtime.host import ActorHost
from brokers.factory import make_broker
from brokers.settings import Settings

BASE = Settings()
# Tests under these folders run against the real servers, as does any test using their fixtures.
_ON_THE_SERVERS = ("integration", "e2e", "chaos")
_SERVER_FIXTURES = {"management", "settings"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs RabbitMQ and MongoDB ``integration``, so that
    ``pytest -m "not integration"`` runs the rest alone, in seconds, with no server."""
    for item in items:
        folder = item.path.relative_to(item.config.rootpath).parts[1:2]
        if set(folder) & set(_ON_THE_SERVERS) or _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


@pytest.fixture
def management() -> httpx.Client:
    parts = urlsplit(BASE.rabbitmq_management_url)
    base = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    with httpx.Client(
        base_url=base, auth=(parts.username or "guest", parts.password or "guest"), timeout=10
    ) as client:
        yield client


@pytest.fixture
def settings(management: httpx.Client) -> Settings:
    """Settings pointing at a fresh vhost and fresh databases, with fast retries for tests."""
    tag = uuid.uuid4().hex[:10]
    vhost = f"emporium-test-{tag}"
    management.put(f"/api/vhosts/{vhost}").raise_for_status()
    user = urlsplit(BASE.rabbitmq_url).username or "guest"
    management.put(
        f"/api/permissions/{vhost}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}
    ).raise_for_status()
    settings = BASE.model_copy(
        update={
            "rabbitmq_url": _with_vhost(BASE.rabbitmq_url, vhost),
            "emporium_db_prefix": f"t{tag}",
            "emporium_retry_delays_ms": (200, 400, 800),
            "emporium_outbox_sweep_s": 0.5,
            "emporium_delivery_limit": 3,
        }
    )
    yield settings
    if not os.environ.get("EMPORIUM_KEEP_TEST_VHOSTS"):
        management.delete(f"/api/vhosts/{vhost}")


@pytest.fixture
async def mongo(settings: Settings) -> AsyncIterator[AsyncMongoClient]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    yield client
    for name in await client.list_database_names():
        if name.startswith(settings.emporium_db_prefix + "_"):
            await client.drop_database(name)
    await client.close()


@pytest.fixture
async def start_host(settings: Settings, mongo: AsyncMongoClient) -> AsyncIterator[Callable]:
    """Start actor hosts (all actors unless named); every host started is stopped at the end."""
    hosts: list[ActorHost] = []

    async def start(*names: str, **overrides) -> ActorHost:
        chosen = [ACTORS[n] for n in (names or ACTORS)]
        host = ActorHost(chosen, settings.model_copy(update=overrides) if overrides else settings)
        await host.start()
        hosts.append(host)
        return host

    yield start
    for host in reversed(hosts):
        await host.stop()


@pytest.fixture
async def broker(settings: Settings, mongo: AsyncMongoClient):
    """A publishing broker connection in the test's vhost (exchanges declared)."""
    from brokers.topology import declare_exchanges

    broker = make_broker(settings, app_name="tests", role="publisher")
    await broker.connect()
    await declare_exchanges(broker)
    yield broker
    await broker.stop()
