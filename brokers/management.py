"""Where a process's RabbitMQ is, as operators' tools see it: the vhost of an AMQP URL and the
management API (its client, and its UI's page of queues). Shared by the edge, the CLI, the bench
and the tests.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from brokers.settings import Settings


class GuestRefused(ValueError):
    """The management API is not to be used with RabbitMQ's guest account in production."""


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL connects to, read the way aiormq reads it ("/" when the path is empty)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(amqp_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(amqp_url)._replace(path="/" + quote(vhost, safe="")))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def management_client(settings: Settings) -> httpx.AsyncClient:
    """A client of the management API, with the credentials of its URL moved into basic auth."""
    if settings.emporium_env == "production" and "guest:guest@" in settings.rabbitmq_management_url:
        raise GuestRefused("refusing in production: RABBITMQ_MANAGEMENT_URL uses the guest account")
    parts = urlsplit(settings.rabbitmq_management_url)
    return httpx.AsyncClient(
        base_url=_without_credentials(settings.rabbitmq_management_url),
        auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
        timeout=10.0,
    )


def queues_ui(settings: Settings) -> str:
    """The management UI's page of the queues in the settings' vhost (no credentials in it); a
    queue's own page is this followed by ``/<queue>``."""
    vhost = quote(vhost_of(settings.rabbitmq_url), safe="")
    return f"{_without_credentials(settings.rabbitmq_management_url)}/#/queues/{vhost}"
